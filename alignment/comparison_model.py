"""One base model with every compared LoRA adapter attached (PEFT multi-adapter), cached.

* :func:`check_adapter_base`: an adapter folder is a policy adapter trained on this base;
* :class:`ComparisonModel`: ONE private copy of the base model with every compared adapter
  attached under its own name (``adapter_1``, ...), a folder retrained in place loaded again;
* :func:`get_comparison_model`: that copy, cached per (base, device) like
  :func:`alignment.models.get_model`; :func:`clear_comparison_cache` forgets it;
* :func:`shared_base`: the one base that several compared models share.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from alignment.adapters import BASE, is_peft
from alignment.models import LoadedModel, default_device, load_model
from alignment.run_folder import ADAPTER_CONFIG, ADAPTER_WEIGHTS, read_json, saved_training_config

log = logging.getLogger(__name__)


def _same_location(a: str, b: str) -> bool:
    """Whether two base-model locations (folders or hub ids) name the same weights."""
    if a == b:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


def check_adapter_base(adapter: str | Path, base_spec: str) -> Path:
    """The adapter folder, after checking it is a policy LoRA adapter trained on ``base_spec``.

    The base it records (``adapter_config.json``: ``base_model_name_or_path``) must be where
    ``base_spec``'s weights live (:func:`alignment.training.lora.base_model_location`), or the
    model spec of its training run (``training_config.json``) must resolve there; an adapter that
    records no base at all is let through with a warning (PEFT then fails on a shape mismatch).
    """
    from alignment.run_configs import check_adapter_dir
    from alignment.training.lora import base_model_location

    path = check_adapter_dir(adapter)
    expected = base_model_location(base_spec)
    recorded = read_json(path / ADAPTER_CONFIG).get("base_model_name_or_path")
    if not recorded:
        log.warning("adapter %s does not record its base model; assuming %s", path, base_spec)
        return path
    if _same_location(str(recorded), expected):
        return path
    trained_spec = (saved_training_config(path) or {}).get("model")
    if isinstance(trained_spec, str) and trained_spec.strip():
        with contextlib.suppress(ValueError, RuntimeError, OSError):
            if _same_location(base_model_location(trained_spec), expected):
                return path
    raise ValueError(
        f"adapter {path} was trained on base model {_named(trained_spec, str(recorded))}, not on "
        f"{_named(base_spec, expected)}: models compared side by side share one base model; compare this adapter "
        f"with its own base"
    )


def _named(spec: str | None, location: str) -> str:
    """``'spec' (location)``, or just the location when the spec says no more."""
    return f"{spec!r} ({location})" if spec and spec != location else location


def _adapter_key(path: Path) -> tuple[str, int]:
    """Identity of an adapter's weights: its folder and the weights file's modification time, so a
    folder retrained in place is loaded again."""
    weights = next((path / name for name in ADAPTER_WEIGHTS
                    if (path / name).is_file()), path / ADAPTER_CONFIG)
    return str(path.resolve()), weights.stat().st_mtime_ns


@dataclass
class ComparisonModel:
    """A private copy of one base model, with LoRA adapters attached under names ``adapter_1``, ...

    ``loaded.model`` is the plain transformers model until the first adapter arrives, a PEFT model
    after. Use ``loaded.lock`` around generation: switching adapters is global state.
    """

    loaded: LoadedModel
    base_spec: str
    adapters: dict[str, tuple[tuple[str, int], str]] = field(default_factory=dict)  # folder -> (key, name)
    _counter: int = 0

    def adapter_name(self, adapter: str | Path | None) -> str:
        """The PEFT adapter name of a loaded adapter folder (``BASE`` for None)."""
        if adapter is None:
            return BASE
        return self.adapters[str(Path(adapter).expanduser().resolve())][1]

    def attach(self, adapter: str | Path) -> str:
        """Load ``adapter`` (checked against the base) unless its current weights are attached already."""
        from peft import PeftModel

        path = check_adapter_base(adapter, self.base_spec)
        key = _adapter_key(path)
        known = self.adapters.get(key[0])
        if known and known[0] == key:
            return known[1]
        self._counter += 1
        name = f"adapter_{self._counter}"
        model = self.loaded.model
        try:
            if is_peft(model):
                model.load_adapter(str(path), adapter_name=name, is_trainable=False)
                if known:  # the folder was retrained: drop its old weights
                    model.delete_adapter(known[1])
            else:
                model = PeftModel.from_pretrained(model, str(path), adapter_name=name, is_trainable=False)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise ValueError(f"adapter {path} does not fit base model {self.base_spec!r}: {exc}") from exc
        model.eval()
        self.loaded.model = model
        self.adapters[key[0]] = (key, name)
        return name


def load_comparison_model(base_spec: str, adapters: Sequence[str | Path] = (), device: str | None = None) -> ComparisonModel:
    """A fresh private copy of ``base_spec`` with every adapter in ``adapters`` attached."""
    compared = ComparisonModel(load_model(base_spec, device), base_spec)
    for adapter in adapters:
        compared.attach(adapter)
    return compared


_cache: dict[tuple[str, str], ComparisonModel] = {}
_cache_lock = threading.Lock()


def get_comparison_model(base_spec: str, adapters: Sequence[str | Path] = (), device: str | None = None) -> ComparisonModel:
    """The shared comparison copy of ``base_spec`` on ``device``, with ``adapters`` attached.

    One copy per base and device: asking for other adapters later attaches them to the same copy
    (LoRA weights are small), rather than loading the base again. Adapters are checked before
    anything is loaded, so a wrong one leaves the cache as it was.
    """
    device = device or default_device()
    for adapter in adapters:
        check_adapter_base(adapter, base_spec)
    with _cache_lock:
        compared = _cache.get((base_spec, device))
        if compared is None:
            compared = _cache[(base_spec, device)] = load_comparison_model(base_spec, (), device)
    with compared.loaded.lock:
        try:
            for adapter in adapters:
                compared.attach(adapter)
        except ValueError:
            # A load that failed half-way can leave injected LoRA layers behind: start clean next time.
            with _cache_lock:
                _cache.pop((base_spec, device), None)
            raise
    return compared


def clear_comparison_cache() -> None:
    """Forget the cached comparison models (tests; freeing memory)."""
    with _cache_lock:
        _cache.clear()


def shared_base(specs: Sequence[str]) -> str:
    """The one base model of ``specs`` (model specs), or ValueError naming the ones that differ."""
    from alignment.training.lora import base_model_location

    if not specs:
        raise ValueError("pick at least one model to compare")
    locations = {spec: base_model_location(spec) for spec in specs}
    first = specs[0]
    others = [spec for spec, where in locations.items() if not _same_location(where, locations[first])]
    if others:
        raise ValueError(f"models compared side by side share one base model: got {first!r} and {others[0]!r}")
    return first

