"""Starting the process a command runs in: with jemalloc preloaded for training.

Kept apart from :mod:`annotation.services.training` so the check costs nothing: that module loads
the training stack, which would be loaded twice when the process restarts itself here.
"""
from __future__ import annotations

import os
import sys

from alignment.training.memory import jemalloc_library, jemalloc_loaded, with_jemalloc


def rerun_with_jemalloc(argv: list[str]) -> None:
    """Replace this process by ``argv`` with jemalloc preloaded, when the system has it and it is not
    loaded yet (training keeps about a quarter less memory with it; see
    :mod:`alignment.training.memory`). Otherwise return and go on with the allocator we have."""
    if jemalloc_library() and not jemalloc_loaded():
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(argv[0], argv, with_jemalloc())
