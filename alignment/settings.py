"""What every run-settings dataclass (best-of-N, evaluation) does alike: resolve its device, save
itself as plain JSON with its method, and rebuild from that JSON refusing unknown keys.

A mixin of methods only (no fields), so each settings class keeps its own fields, help texts and
validation, and the job form, the saved config and the worker agree on one dataclass.
"""
from __future__ import annotations

from dataclasses import asdict, field, fields
from pathlib import Path
from typing import Any, ClassVar

from alignment.sampling import SamplingParams
from alignment.training.config import DEVICES, cuda_available


def help_field(default: Any, text: str) -> Any:
    """A dataclass field with its help text (the job form shows it)."""
    return field(default=default, metadata={"help": text})


def check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_optional_count(name: str, value: Any) -> None:
    """None (no limit) or an integer >= 1."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be an integer >= 1 or empty for all, got {value!r}")


class RunSettings:
    """Needs the dataclass fields ``data``, ``out``, ``device`` (and, for :meth:`sampling_params`,
    ``temperature``, ``top_p``, ``max_new_tokens``, ``seed``) and a class attribute ``method``."""

    method: ClassVar[str]

    def check_files(self) -> None:
        """The prompt file exists and an output folder is named."""
        if not self.data or not Path(self.data).expanduser().is_file():
            raise ValueError(f"prompt file not found: {self.data!r}")
        if not self.out:
            raise ValueError("out must name an output folder")

    def check_device(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.device == "cuda" and not cuda_available():
            raise ValueError("device='cuda' but no CUDA GPU is available; use device='cpu' or 'auto'")

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
