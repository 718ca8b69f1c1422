"""Allocator choices for training processes (alignment.training.memory), in real subprocesses."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from alignment.training.memory import JEMALLOC_ENV, jemalloc_library, with_jemalloc

ROOT = Path(__file__).resolve().parents[1]
PROBE = ("from alignment.training.memory import jemalloc_loaded, lean_allocator\n"
         "with lean_allocator() as applied:\n    print(jemalloc_loaded(), applied)")


def probe(env: dict[str, str]) -> str:
    return subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_a_child_with_jemalloc_runs_on_it_and_skips_the_glibc_tuning():
    if jemalloc_library() is None:
        pytest.skip("libjemalloc2 is not installed (bash .ci/setup installs it)")
    plain = {k: v for k, v in with_jemalloc().items() if k != "LD_PRELOAD"}
    assert probe(plain) == "False True"  # glibc: the mmap threshold is tuned while checkpointing
    assert probe(with_jemalloc(plain)) == "True False"  # jemalloc serves the allocations itself


def test_jemalloc_can_be_turned_off_or_pointed_elsewhere(tmp_path):
    assert "LD_PRELOAD" not in with_jemalloc({JEMALLOC_ENV: "0"})
    assert jemalloc_library({JEMALLOC_ENV: str(tmp_path / "missing.so")}) is None
    fake = tmp_path / "libjemalloc.so.2"
    fake.write_bytes(b"")
    env = with_jemalloc({JEMALLOC_ENV: str(fake), "LD_PRELOAD": "/other.so"})
    assert env["LD_PRELOAD"] == f"{fake}:/other.so"
    assert with_jemalloc(env)["LD_PRELOAD"] == env["LD_PRELOAD"]  # not added twice
