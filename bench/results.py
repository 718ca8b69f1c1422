"""Raw benchmark figures as JSON under ``bench/results/``, with what it takes to audit them.

Every bench script adds a ``--json PATH`` option through :func:`add_json_option` (default
``bench/results/<script>.json``) and ends with :func:`write_results`. The file holds the raw
per-run figures the script measured (not only the summary it prints), the arguments, and the
circumstances of the run: commit, date, library versions, CPU count. Each measured side is
wrapped in :func:`measured`, which records the load average at its start and end: the
development machine is a shared 2-core box, and a figure taken while other work ran must say so.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
LIBRARIES = ("torch", "transformers", "peft", "trl", "gradio")


def add_json_option(parser: argparse.ArgumentParser, script: str) -> None:
    """``--json PATH`` (``--json-out`` kept as an alias): where the raw figures go."""
    default = RESULTS_DIR / f"{script}.json"
    parser.add_argument("--json", "--json-out", dest="json", type=Path, default=default,
                        help=f"write the raw figures, settings and environment here as JSON (default: "
                             f"{default.relative_to(ROOT)})")


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded to what they mean."""
    return [round(x, 2) for x in os.getloadavg()]


@contextmanager
def measured(record: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Fill ``record`` with the load average at the start and end of the block and its wall seconds."""
    record["loadavg_start"] = load_average()
    started = time.perf_counter()
    try:
        yield record
    finally:
        record["block_wall_s"] = round(time.perf_counter() - started, 3)
        record["loadavg_end"] = load_average()


def _git(*cmd: str) -> str:
    try:
        return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.rstrip()
    except (OSError, subprocess.SubprocessError):
        return ""


def code_version() -> dict[str, Any]:
    """The commit measured, and the files with uncommitted changes outside bench/ (they are measured too)."""
    dirty = [line[3:] for line in _git("status", "--porcelain").splitlines()
             if line[3:] and not line[3:].startswith(("bench/", "docs/"))]
    return {"commit": _git("rev-parse", "HEAD") or "unknown", "subject": _git("log", "-1", "--format=%s"),
            "uncommitted_files": dirty}


def describe_code(code: dict[str, Any]) -> str:
    """One line for a printed header: short commit, and how many files differ from it."""
    text = code["commit"][:7]
    if code["uncommitted_files"]:
        text += f" + uncommitted changes in {len(code['uncommitted_files'])} files"
    return text


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """Where and on what the figures were taken."""
    return {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "code": code_version(),
        "versions": {"python": platform.python_version(), **{name: _version(name) for name in LIBRARIES}},
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "loadavg_at_write": load_average(),
    }


def _jsonable(value: Any) -> Any:
    """Paths, tuples and dataclasses as JSON values; everything else left to ``json``."""
    if is_dataclass(value) and not isinstance(value, type):
        return _jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_results(path: Path, script: str, args: argparse.Namespace, figures: dict[str, Any],
                  started: dict[str, Any] | None = None) -> Path:
    """Write ``figures`` with the command, arguments and environment to ``path``; say where.

    ``started`` is :func:`environment` taken when the measuring began: a long run records both ends,
    so a commit or a library that changed under it shows.
    """
    payload = {"script": f"bench/{script}.py", "command": [Path(sys.executable).name, "-m", f"bench.{script}",
                                                          *sys.argv[1:]],
               "arguments": _jsonable(vars(args)), "environment": environment(),
               **({"environment_at_start": started} if started else {}), **_jsonable(figures)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"raw figures written to {path}", flush=True)
    return path
