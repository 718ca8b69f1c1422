"""Keeping a CPU training process's resident memory close to what its tensors need.

Two tools, for two situations:

* :func:`with_jemalloc`: the environment for a training subprocess, with jemalloc preloaded when
  the system has it (Debian/Ubuntu: ``apt-get install libjemalloc2``; ``.ci/setup`` installs it).
  jemalloc serves each size from its own slabs and reuses freed memory without the fragmentation
  described below: on the embedded model (DPO, one pair per forward pass) the process peaks at
  1.76 GB instead of 2.43 GB with glibc, at the same speed. Job subprocesses and ``app.py train``
  run with it; ``PREFSTUDIO_JEMALLOC=0`` turns it off, ``PREFSTUDIO_JEMALLOC=/path/libjemalloc.so``
  picks another build.
* :func:`lean_allocator`, for glibc itself (no jemalloc), while gradient checkpointing:

PyTorch's CPU allocator is plain ``malloc``. glibc serves blocks above ``M_MMAP_THRESHOLD`` with
``mmap`` and gives them back to the system on ``free``, but it raises that threshold (up to
32 MiB) each time such a block is freed, so after the first layer nearly every activation comes
from the heap. A training step keeps some tensors (checkpointed layer inputs, saved activations)
while freeing others of different sizes around them; the heap fragments and the freed memory is
never returned. Measured on the embedded model with gradient checkpointing (4 HH pairs, length
<= 512): the tensors alive at the peak take about 1.3 GB, the process peaks at 3.5 GB.

:func:`lean_allocator` fixes the threshold at 1 MiB for the duration: every large block is
mapped on demand and returned when freed, and the peak falls to 1.4 GB. The price is the page
faults of mapping fresh memory (about 1.6x the step time here), which is why it is only used
when the run asked to save memory (``gradient_checkpointing``). Elsewhere (not glibc) it does
nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # <malloc.h>
LEAN_THRESHOLD = 1 << 20  # 1 MiB: activations of any real batch are larger
#: glibc's ceiling for its dynamic threshold; restored on exit so later work keeps heap speed.
RESTORED_THRESHOLD = 32 << 20


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version") else None
    except OSError:
        return None


@contextmanager
def lean_allocator(enabled: bool = True) -> Iterator[bool]:
    """Within the block, large allocations are mmapped and returned to the system when freed.

    Yields whether the setting took effect (False off glibc, under a preloaded jemalloc, which
    serves the allocations instead and needs no help, or when ``enabled`` is False).
    """
    libc = _glibc() if enabled and not jemalloc_loaded() else None
    applied = bool(libc and libc.mallopt(M_MMAP_THRESHOLD, LEAN_THRESHOLD))
    if enabled and not applied:
        log.debug("lean_allocator: not glibc malloc; leaving the allocator as it is")
    try:
        yield applied
    finally:
        if applied:
            libc.mallopt(M_MMAP_THRESHOLD, RESTORED_THRESHOLD)
            libc.malloc_trim(0)


# --------------------------------------------------------------------------------------------
# jemalloc for training subprocesses
# --------------------------------------------------------------------------------------------

JEMALLOC_ENV = "PREFSTUDIO_JEMALLOC"
JEMALLOC_PATHS = (
    "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
    "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
    "/usr/lib64/libjemalloc.so.2",
    "/usr/local/lib/libjemalloc.so.2",
)


def jemalloc_library(environ: Mapping[str, str] | None = None) -> str | None:
    """The jemalloc shared library to preload, or None (not Linux, not installed, or turned off)."""
    environ = os.environ if environ is None else environ
    choice = environ.get(JEMALLOC_ENV, "").strip()
    if choice.lower() in {"0", "off", "false", "no"} or not sys.platform.startswith("linux"):
        return None
    if choice:
        return choice if Path(choice).is_file() else None
    return next((path for path in JEMALLOC_PATHS if Path(path).is_file()), None)


def with_jemalloc(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``environ`` (default: this process's) whose children preload jemalloc, when available."""
    env = dict(os.environ if environ is None else environ)
    library = jemalloc_library(env)
    if library is None:
        return env
    preload = [p for p in env.get("LD_PRELOAD", "").split(":") if p]
    if library not in preload:
        env["LD_PRELOAD"] = ":".join([library, *preload])
    return env


def jemalloc_loaded() -> bool:
    """Whether this process runs with jemalloc (e.g. preloaded by its parent)."""
    try:
        return "libjemalloc" in Path("/proc/self/maps").read_text()
    except OSError:
        return False
