"""What every settings dataclass does alike (the training configs, best-of-N, evaluation): a help
text per field, the device check and its resolution, the plain-JSON form saved with a run (with its
method), and the rebuild from that JSON refusing unknown keys.

:class:`Settings` is a mixin of methods only (no fields), so each settings class keeps its own
fields, help texts and validation, and the job form, the CLI, the saved config and the worker agree
on one dataclass. :class:`RunSettings` adds what the sampling runs (best-of-N, evaluation) share.

It loads nothing heavy: torch only when asked whether CUDA is there.
"""
from __future__ import annotations

from dataclasses import asdict, field, fields
from pathlib import Path
from typing import Any, ClassVar

DEVICES = ("auto", "cpu", "cuda")


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def help_field(default: Any, text: str, label: str | None = None, **kwargs: Any) -> Any:
    """A dataclass field with a default and its help text (the job form and the CLI show it); ``label``
    is the form's label where the field name alone would mislead."""
    return field(default=default, metadata={"help": text, **({"label": label} if label else {})}, **kwargs)


def check_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> None:
    """An int (not a bool) from ``minimum`` to ``maximum`` (no upper limit when None), else ValueError."""
    if maximum is None:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    elif isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ValueError(f"{name} must be a whole number from {minimum} to {maximum:,}, got {value!r}")


def check_optional_count(name: str, value: Any) -> None:
    """None (no limit) or an integer >= 1."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be an integer >= 1 or empty for all, got {value!r}")


class Settings:
    """Needs a dataclass field ``device`` and a class attribute ``method``."""

    method: ClassVar[str]

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


class RunSettings(Settings):
    """Needs the dataclass fields ``data``, ``out``, ``device`` (and, for :meth:`sampling_params`,
    ``temperature``, ``top_p``, ``max_new_tokens``, ``seed``) and a class attribute ``method``."""

    def check_files(self) -> None:
        """The prompt file exists and an output folder is named."""
        if not self.data or not Path(self.data).expanduser().is_file():
            raise ValueError(f"prompt file not found: {self.data!r}")
        if not self.out:
            raise ValueError("out must name an output folder")

    def sampling_params(self) -> Any:
        """The run's :class:`alignment.sampling.SamplingParams`."""
        from alignment.sampling import SamplingParams

        return SamplingParams(temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens,
                              seed=self.seed)
