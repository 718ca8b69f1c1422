"""Label submissions under load: 16 annotator processes on SQLite and on PostgreSQL, side by side.

Each annotator is its own OS process (``tests/annotator_process.py``): it asks for its next item
and submits the label twice (a double click), all of them starting together. Before the start,
each process labels one item of a separate warm-up project, as a running server has served
requests before: a fresh process's first transaction also connects and compiles its SQL, tens of
milliseconds per process that, with 16 cold processes starting at once, queued behind each other
and made the paced p99 (the 3rd-worst of 320 submissions) the start-up stampede's figure, not the
storage's. Two loads per engine:

* **saturated**: every annotator submits as fast as it can. This measures throughput (submissions
  per second, from the start signal to the last one). Its latencies are a queue's: 16 clients that
  never pause keep 16 requests waiting at all times, so the mean latency is 16 / throughput
  whatever the storage does (Little's law); on two cores that is far above 50 ms.
* **paced**: each annotator reads each item for a random time first (exponential, mean
  ``--think-ms``), as people do. This measures the latency one submission sees (median, p99)
  under 16 concurrent annotators: the figure the p99 < 50 ms target is about.

SQLite runs twice, side by side: with its writers queued in the kernel (``storage.write_queue``,
the default) and with ``PREFSTUDIO_SQLITE_WRITE_QUEUE=0`` (SQLite's own busy handler, as before).
Every run checks that nothing was lost or duplicated. The load average of the machine is recorded at the
start and end of each run (a shared machine's other work shows in every figure). PostgreSQL is a
throwaway server started for the run (``tests/postgres_support.py``: fsync off, Unix socket), so its
figures are an upper bound for a durable server.

    python -m bench.storage [--annotators 16] [--labels 10] [--think-ms 1000]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.results import ROOT, add_json_option, measured, write_results
from storage.write_queue import SWITCH

P99_TARGET_MS = 50.0


def _wait_until_ready(procs: list[subprocess.Popen], ready_files: list[Path], timeout_s: float = 300) -> None:
    """Wait until every annotator has imported and labelled its warm-up item (or fail if one died)."""
    deadline = time.monotonic() + timeout_s
    while not all(path.exists() for path in ready_files):
        dead = [proc for proc in procs if proc.poll() is not None]
        if dead:
            raise RuntimeError(f"an annotator process failed before the start:\n{dead[0].communicate()[1]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"annotator processes not ready after {timeout_s:.0f} s")
        time.sleep(0.05)


def run_engine(url: str, annotators: int, labels: int, work: Path, think_ms: float = 0.0,
               env: dict[str, str] | None = None) -> dict[str, Any]:
    from sqlalchemy import func, select

    from storage.db import open_database, transaction
    from storage.models import Item, PairwiseLabel, Project
    from tests.factories import make_items, make_project

    db = open_database(url)
    make_project(db, "bench")
    make_items(db, "bench", annotators * labels)
    make_project(db, "warmup")
    make_items(db, "warmup", annotators)
    go = work / f"go-{time.monotonic_ns()}"
    procs = [subprocess.Popen([sys.executable, "-m", "tests.annotator_process", url, "bench", f"annotator-{n}",
                               str(labels), str(go), str(think_ms), "warmup"], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
             for n in range(annotators)]
    _wait_until_ready(procs, [Path(f"{go}.ready-annotator-{n}") for n in range(annotators)])
    record: dict[str, Any] = {"think_ms": think_ms}
    with measured(record):
        started = time.time()
        go.touch()
        outputs = [proc.communicate(timeout=600) for proc in procs]
    failed = [err for proc, (_, err) in zip(procs, outputs) if proc.returncode != 0]
    if failed:
        raise RuntimeError(f"{len(failed)} annotator process(es) failed:\n{failed[0]}")
    rows = [json.loads(line) for out, _ in outputs for line in out.splitlines()]
    latencies_ms = sorted(r["seconds"] * 1000 for r in rows)
    with transaction(db) as s:
        stored = int(s.scalar(select(func.count()).select_from(PairwiseLabel).join(Item, PairwiseLabel.item_id == Item.id)
                              .join(Project, Item.project_id == Project.id).where(Project.name == "bench")))
    db.engine.dispose()
    record.update(
        submissions=len(rows), labels_stored=stored, labels_expected=annotators * labels,
        duplicates_reported=sum(r["duplicate"] for r in rows),
        submissions_per_s=round(len(rows) / (max(r["ended"] for r in rows) - started), 1),
        latency_ms_median=round(statistics.median(latencies_ms), 2),
        latency_ms_p99=round(latencies_ms[min(len(latencies_ms) - 1, int(0.99 * len(latencies_ms)))], 2),
        latencies_ms=[round(x, 3) for x in latencies_ms])
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--annotators", type=int, default=16, help="annotator processes (default 16)")
    parser.add_argument("--labels", type=int, default=10, help="labels per annotator, each submitted twice (default 10)")
    parser.add_argument("--think-ms", type=float, default=1000.0,
                        help="paced runs: mean time an annotator reads an item before labelling it (default 1000)")
    add_json_option(parser, "storage")
    args = parser.parse_args(argv)

    from tests.postgres_support import PostgresServer, unavailable_reason

    # SQLite twice: its writers queued in the kernel (storage.write_queue, the default) and left to
    # SQLite's own busy handler, as before the queue.
    sqlite_sides = {"sqlite": {}, "sqlite_busy_handler": {SWITCH: "0"}}
    figures: dict[str, Any] = {**{side: {} for side in sqlite_sides}, "postgresql": {}}
    loads = {"saturated": 0.0, "paced": args.think_ms}
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp:
        work = Path(tmp)
        for load, think_ms in loads.items():
            for side, env in sqlite_sides.items():
                figures[side][load] = run_engine(str(work / f"{side}-{load}.db"), args.annotators, args.labels, work,
                                                 think_ms, env)
        reason = unavailable_reason()
        if reason:
            figures["postgresql"] = {"skipped": reason}
        else:
            server = PostgresServer()
            try:
                for load, think_ms in loads.items():
                    figures["postgresql"][load] = run_engine(server.new_database(), args.annotators, args.labels,
                                                             work, think_ms)
            finally:
                server.stop()

    print(f"{args.annotators} annotator processes x {args.labels} labels, each submitted twice; "
          f"paced: {args.think_ms:.0f} ms mean reading time per item")
    print(f"{'':34}{'SQLite':>12}{'SQLite, no':>12}{'PostgreSQL':>12}")
    print(f"{'':34}{'':>12}{'write queue':>12}{'':>12}")
    rows = [("saturated", "submissions_per_s", "saturated: submissions/s"),
            ("saturated", "latency_ms_median", "saturated: median ms"),
            ("saturated", "latency_ms_p99", "saturated: p99 ms"),
            ("paced", "latency_ms_median", "paced: median ms"),
            ("paced", "latency_ms_p99", f"paced: p99 ms (target < {P99_TARGET_MS:.0f})"),
            ("saturated", "loadavg_start", "saturated: load average at start"),
            ("paced", "loadavg_start", "paced: load average at start")]
    for load, key, label in rows:
        cells = [side.get(load, {}).get(key, "skipped") for side in figures.values()]
        print(f"{label:<34}" + "".join(f"{cell[0] if isinstance(cell, list) else cell:>12}" for cell in cells))
    runs = [run for side in figures.values() for run in side.values() if isinstance(run, dict)]
    lost = [run for run in runs if run["labels_stored"] != run["labels_expected"]]
    print("labels stored = expected in every run" if not lost else f"{len(lost)} run(s) lost or duplicated labels")
    write_results(args.json, "storage", args, figures)
    return 0 if not lost else 1


if __name__ == "__main__":
    sys.exit(main())
