"""Progress reporting: the training loops emit events, callbacks decide what to do with them.

Events, in order: ``"phase"`` (the slow work before the first step: ``{"phase": "loading the
model"}``, then ``{"phase": "reference pass", "done": n, "total": m}`` per batch), ``"train_begin"``
(once), ``"step"`` (every ``logging_steps`` optimizer steps), ``"eval"`` (after evaluating the
held-out split), ``"save"`` (a checkpoint or the final adapter was written), ``"train_end"`` (once,
with the final metrics). The loops know nothing about who listens:
they call :func:`emit` with a state dict holding at least ``step``, ``total_steps``, ``loss``,
``metrics`` and ``elapsed_s``.

Two listeners ship here: :class:`ProgressFile` (JSON lines a UI can tail) and :class:`TqdmCallback`
(a progress bar for the command line). Anything with ``on_event(event, state)`` works.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

EVENTS = ("phase", "train_begin", "step", "eval", "save", "train_end")
LOADING_PHASE, REFERENCE_PHASE = "loading the model", "reference pass"


class Callback:
    """Base class: override :meth:`on_event` (or only the events you care about)."""

    def on_event(self, event: str, state: dict[str, Any]) -> None:
        handler = getattr(self, f"on_{event}", None)
        if handler is not None:
            handler(state)


class FunctionCallback(Callback):
    """Adapts a plain ``fn(event, state)``."""

    def __init__(self, fn: Callable[[str, dict[str, Any]], None]):
        self.fn = fn

    def on_event(self, event: str, state: dict[str, Any]) -> None:
        self.fn(event, state)


def as_callbacks(callbacks: Iterable[Any]) -> list[Callback]:
    """Callbacks as given; bare functions are wrapped."""
    out = []
    for cb in callbacks or ():
        if hasattr(cb, "on_event"):
            out.append(cb)
        elif callable(cb):
            out.append(FunctionCallback(cb))
        else:
            raise TypeError(f"callback {cb!r} has no on_event(event, state) and is not callable")
    return out


def emit(callbacks: Iterable[Callback], event: str, state: dict[str, Any]) -> None:
    """Send ``event`` to every callback; a failing listener is logged, never fatal to training."""
    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r}; expected one of {', '.join(EVENTS)}")
    for cb in callbacks:
        try:
            cb.on_event(event, state)
        except Exception:  # noqa: BLE001 - a broken progress bar must not kill a training run
            log.exception("training callback %r failed on %r", cb, event)


def report_phase(callbacks: Iterable[Callback], phase: str, done: int | None = None,
                 total: int | None = None) -> None:
    """Say which slow step before training runs now (and how far it is, when it counts items)."""
    emit(callbacks, "phase", {"phase": phase, "done": done, "total": total})


def phase_progress(callbacks: Iterable[Callback], phase: str) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` function reporting ``phase``: handed to loops that know nothing of
    callbacks (e.g. the reference pass)."""
    return lambda done, total: report_phase(callbacks, phase, done, total)


def eta_seconds(step: int, total_steps: int, elapsed_s: float, start_step: int = 0) -> float | None:
    """Remaining time at the pace of the steps done in this process (None before the first)."""
    done = step - start_step
    if done <= 0 or total_steps <= 0:
        return None
    return max(0.0, elapsed_s / done * (total_steps - step))


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # 0-d tensors / numpy scalars
        try:
            return _jsonable(value.item())
        except (ValueError, RuntimeError):
            return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


class ProgressFile(Callback):
    """Appends one JSON line per event: ``{event, step, total_steps, loss, metrics, elapsed_s, eta_s, time}``.

    Each line is written and flushed whole, so a reader tailing the file never sees half a record.
    Extra keys of the state (e.g. ``path`` on ``save``) are kept.
    """

    KEYS = ("step", "total_steps", "loss", "metrics", "elapsed_s", "eta_s")

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def on_event(self, event: str, state: dict[str, Any]) -> None:
        record = {"event": event}
        record.update({k: state.get(k) for k in self.KEYS})
        record.update({k: v for k, v in state.items() if k not in record and k != "model"})
        record["time"] = time.time()
        line = json.dumps(_jsonable(record), ensure_ascii=False)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()

    @staticmethod
    def read(path: str | os.PathLike) -> list[dict[str, Any]]:
        path = Path(path)
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class TqdmCallback(Callback):
    """A tqdm bar over optimizer steps showing the loss and reward accuracy; eval results printed."""

    def __init__(self, **tqdm_kwargs: Any):
        self.kwargs = tqdm_kwargs
        self.bar = None

    def on_train_begin(self, state: dict[str, Any]) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=state.get("total_steps"), initial=state.get("step", 0),
                        desc=state.get("method", "train"), unit="step", **self.kwargs)

    def on_step(self, state: dict[str, Any]) -> None:
        if self.bar is None:
            return
        self.bar.n = state.get("step", self.bar.n)
        postfix = {"loss": f"{state['loss']:.4f}"} if state.get("loss") is not None else {}
        accuracy = (state.get("metrics") or {}).get("rewards/accuracies")
        if accuracy is not None:
            postfix["acc"] = f"{accuracy:.2f}"
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.refresh()

    def on_eval(self, state: dict[str, Any]) -> None:
        metrics = state.get("metrics") or {}
        text = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, (int, float)))
        line = f"eval @ step {state.get('step')}: {text}"
        if self.bar is not None:
            self.bar.write(line, file=self.kwargs.get("file"))
        else:
            print(line, file=self.kwargs.get("file"))

    def on_train_end(self, state: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.n = state.get("step", self.bar.n)
            self.bar.close()
            self.bar = None


class EventRecorder(Callback):
    """Keeps every (event, state) in memory: handy in tests and notebooks."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def on_event(self, event: str, state: dict[str, Any]) -> None:
        self.events.append((event, dict(state)))

    def of(self, event: str) -> list[dict[str, Any]]:
        return [state for name, state in self.events if name == event]
