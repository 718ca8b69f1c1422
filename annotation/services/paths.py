"""Model paths typed into the UI or the API, checked one way everywhere, with messages that do not
reveal which server paths exist.

A project's model and judge model, the queue's reward model, and a job's base model, adapter,
reward model and reward-function file all arrive as text from a web client. `alignment` explains
its refusals precisely ("model folder not found: /x", "/etc is not a model"), which would let a
caller map the server's files one probe at a time. So here:

* a typed path that is not a model location gets one message, word for word the same whether it
  is missing (``/nonexistent``), unreadable (``~/.ssh``), a folder of something else (``/etc``) or
  a file that is not a model;
* a model location is a folder holding ``config.json`` (a model) or ``adapter_config.json`` (a
  trained adapter or reward model), or a file starting with the GGUF magic. Only for those does the
  caller get the precise reason (a reward model given as an adapter, a model folder without tokenizer
  files): it reveals no more than that a model lives there, which whoever typed the path knew.

Names that are not paths (``default``, a hub id ``owner/name``, ``openai:URL#MODEL``) are checked as
before, where they are loaded. Who may type a path at all is decided by the caller (roles: admins).
"""
from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from storage.errors import InputError

MODEL_CONFIG = "config.json"
ADAPTER_CONFIG = "adapter_config.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
GGUF_MAGIC = b"GGUF"
# `name` or `owner/name` as the Hugging Face hub spells them; anything else is a path on this server.
_HUB_ID = re.compile(r"[A-Za-z0-9_][\w.-]*(/[\w.-]+)?")
_REMOTE_PREFIX = "openai:"  # alignment.remote.SPEC_PREFIX, without importing httpx for a prefix


def unusable(what: str, spec: str) -> str:
    """The one message for every typed path that is not a model location."""
    return (f"{what} {spec!r} is not a model this server can use: give 'default', a hub id, or a model "
            "folder, .gguf file or trained-model folder on the server")


def is_typed_path(spec: str) -> bool:
    spec = spec.strip()
    return not (spec == "default" or spec.startswith(_REMOTE_PREFIX) or _HUB_ID.fullmatch(spec)) \
        or spec.lower().endswith(".gguf")


def _model_location(path: Path) -> str | None:
    """"model", "adapter" or "gguf" for a model location, else None (also for anything unreadable)."""
    try:
        if path.is_dir():
            if (path / ADAPTER_CONFIG).is_file():
                return "adapter"
            return "model" if (path / MODEL_CONFIG).is_file() else None
        if path.is_file() and path.suffix.lower() == ".gguf":
            with open(path, "rb") as f:
                return "gguf" if f.read(4) == GGUF_MAGIC else None
    except OSError:  # PermissionError on ~/.ssh and the like: the same answer as a missing path
        return None
    return None


def _located(spec: str, what: str, kinds: tuple[str, ...]) -> Path:
    """The typed path, if it is a model location of one of ``kinds``; else the one message."""
    path = Path(spec.strip()).expanduser()
    kind = _model_location(path)
    if kind is None:
        raise InputError(unusable(what, spec))
    if kind not in kinds:
        raise InputError(f"{what}: {spec} is {_LOCATION_WORDS[kind]}, which cannot be used as the {what}")
    return path


_LOCATION_WORDS = {"model": "a base model folder", "adapter": "a trained adapter or reward model folder",
                   "gguf": "a GGUF model file"}


def _explained(what: str, check: Callable[[], object]) -> object:
    """Run alignment's own check on a model location: its precise reason is safe to show there."""
    try:
        return check()
    except (ValueError, RuntimeError, OSError) as exc:
        raise InputError(f"{what}: {exc}") from None


def check_model(spec: str, what: str = "model") -> None:
    """A base model: 'default', a hub id or a remote spec as before; a typed path must be a model folder
    (with tokenizer files) or a GGUF file."""
    spec = (spec or "").strip()
    if spec.startswith(_REMOTE_PREFIX):
        from alignment.remote import RemoteModel  # no torch: plain HTTP

        _explained(what, lambda: RemoteModel.parse(spec))
        return
    if not is_typed_path(spec):
        return
    path = _located(spec, what, ("model", "gguf"))
    if path.is_dir() and not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise InputError(f"{what}: {spec} has a {MODEL_CONFIG} but no tokenizer files ({', '.join(TOKENIZER_FILES)}): "
                         "save the tokenizer beside the model")


def check_adapter(spec: str, what: str = "adapter") -> Path:
    """A trained policy adapter folder (a reward model given here is refused with that reason)."""
    path = _located(spec or "", what, ("adapter",))
    from alignment.run_configs import check_adapter_dir

    return _explained(what, lambda: check_adapter_dir(path))


def check_reward_model(spec: str, what: str = "reward model") -> Path:
    """A trained reward model folder (a policy adapter given here is refused with that reason)."""
    path = _located(spec or "", what, ("adapter",))
    from alignment.run_configs import check_reward_dir

    return _explained(what, lambda: check_reward_dir(path))


def check_reward_function(spec: str, what: str = "reward function") -> None:
    """``FILE.py:NAME[@WEIGHT]``: the file must be a Python file; any other path gets the one message."""
    file_name = str(spec or "").rpartition(":")[0].strip()  # FILE.py:NAME[@WEIGHT]
    path = Path(file_name).expanduser()
    try:
        usable = bool(file_name) and path.suffix == ".py" and path.is_file()
    except OSError:
        usable = False
    if not usable:
        raise InputError(f"{what} {spec!r} is not a reward function this server can use: give FILE.py:NAME "
                         "with a Python file on the server")


# A job's config fields that hold typed paths, and how each is checked (annotation.jobs.runner).
JOB_PATH_FIELDS: dict[str, Callable[[str, str], object]] = {
    "model": check_model, "adapter": check_adapter, "init_adapter": check_adapter,
    "reward": check_reward_model, "reward_model": check_reward_model,
}


def check_job_paths(values: dict) -> None:
    """Every typed path of a job's settings, before the config is built (whose own messages name paths)."""
    for name, check in JOB_PATH_FIELDS.items():
        value = values.get(name)
        if isinstance(value, str) and value.strip():
            check(value, name.replace("_", " "))
    functions = values.get("reward_fn") or []
    for spec in functions.splitlines() if isinstance(functions, str) else functions:  # a form gives lines
        if isinstance(spec, str) and spec.strip():
            check_reward_function(spec)
