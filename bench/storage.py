"""Label submissions under load: 16 annotator processes on SQLite and on PostgreSQL, side by side.

Each annotator is its own OS process (``tests/annotator_process.py``): it asks for its next item
and submits the label twice (a double click), as fast as it can, all of them starting together.
Per engine the script reports submissions per second (all submissions, from the start signal to
the last one) and the latency of one submission (median, p99), and checks that nothing was lost
or duplicated. PostgreSQL is a throwaway server started for the run (``tests/postgres_support.py``:
fsync off, Unix socket), so its figures are an upper bound for a durable server.

    python -m bench.storage [--annotators 16] [--labels 10]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.results import ROOT, add_json_option, measured, write_results

P99_TARGET_MS = 50.0


def run_engine(url: str, annotators: int, labels: int, work: Path) -> dict[str, Any]:
    from sqlalchemy import func, select

    from storage.db import open_database, transaction
    from storage.models import PairwiseLabel
    from tests.factories import make_items, make_project

    db = open_database(url)
    make_project(db, "bench")
    make_items(db, "bench", annotators * labels)
    go = work / f"go-{time.monotonic_ns()}"
    procs = [subprocess.Popen([sys.executable, "-m", "tests.annotator_process", url, "bench", f"annotator-{n}",
                               str(labels), str(go)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for n in range(annotators)]
    time.sleep(5)  # let every process finish importing before the start signal
    record: dict[str, Any] = {}
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
        stored = int(s.scalar(select(func.count()).select_from(PairwiseLabel)))
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
    add_json_option(parser, "storage")
    args = parser.parse_args(argv)

    from tests.postgres_support import PostgresServer, unavailable_reason

    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp:
        work = Path(tmp)
        figures["sqlite"] = run_engine(str(work / "bench.db"), args.annotators, args.labels, work)
        reason = unavailable_reason()
        if reason:
            figures["postgresql"] = {"skipped": reason}
        else:
            server = PostgresServer()
            try:
                figures["postgresql"] = run_engine(server.new_database(), args.annotators, args.labels, work)
            finally:
                server.stop()

    print(f"{args.annotators} annotator processes x {args.labels} labels, each submitted twice")
    print(f"{'':24}{'SQLite':>12}{'PostgreSQL':>12}")
    measured_sides = [figures["sqlite"], figures["postgresql"]]
    for key, label in [("submissions_per_s", "submissions/s"), ("latency_ms_median", "median ms"),
                       ("latency_ms_p99", f"p99 ms (target < {P99_TARGET_MS:.0f})"),
                       ("labels_stored", "labels stored"), ("labels_expected", "labels expected")]:
        print(f"{label:<24}" + "".join(f"{side.get(key, 'skipped'):>12}" for side in measured_sides))
    write_results(args.json, "storage", args, figures)
    ok = all(side.get("labels_stored") == side.get("labels_expected") for side in measured_sides if "skipped" not in side)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
