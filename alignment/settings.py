"""What every run-settings dataclass (best-of-N, evaluation) does alike: resolve its device, save
itself as plain JSON with its method, and rebuild from that JSON refusing unknown keys.

A mixin of methods only (no fields), so each settings class keeps its own fields, help texts and
validation, and the job form, the saved config and the worker agree on one dataclass.
"""
from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, ClassVar

from alignment.sampling import SamplingParams
from alignment.training.config import cuda_available


class RunSettings:
    """Needs the dataclass fields ``device`` (and, for :meth:`sampling_params`, ``temperature``,
    ``top_p``, ``max_new_tokens``, ``seed``) and a class attribute ``method``."""

    method: ClassVar[str]

    def resolved_device(self) -> str:
        """'cuda' or 'cpu': what ``device`` means on this machine."""
        if self.device == "auto":
            return "cuda" if cuda_available() else "cpu"
        return self.device

    def sampling_params(self) -> SamplingParams:
        return SamplingParams(temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens,
                              seed=self.seed)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict with the method and the resolved device (the saved run config)."""
        return {"method": self.method, **asdict(self), "resolved_device": self.resolved_device()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        """Rebuild (and re-validate) a config; an unknown key is refused rather than silently dropped."""
        values = dict(values)
        method = values.pop("method", cls.method)
        values.pop("resolved_device", None)
        if method != cls.method:
            raise ValueError(f"config is for method {method!r}, not {cls.method!r}")
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown {cls.__name__} settings: {', '.join(unknown)}")
        return cls(**values)
