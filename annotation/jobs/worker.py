"""The job subprocess: `python -m annotation.jobs.worker RUN_DIR`.

Reads `RUN_DIR/job.json` ({"kind", "config"}), runs the kind's function (training, or best-of-N) with
a progress file the UI tails (`RUN_DIR/progress.jsonl`), writes its summary to `RUN_DIR/result.json`
on success and exits 0;
any exception prints its traceback to the log (stdout/stderr, redirected by the runner into
`RUN_DIR/log.txt`), leaves its one-line reason in `RUN_DIR/failure.txt` for the queue table, and
exits 1. The runner owns everything else (status, cancel, resume).

A job with several processes runs this module in each of them (`accelerate launch --module
annotation.jobs.worker RUN_DIR`): all train, only the main one (rank 0) reports progress and
writes `result.json`; whichever fails first leaves its reason.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


FAILURE_FILE = "failure.txt"
REASON_CHARS = 300


def run(run_dir: Path) -> dict:
    from alignment.run_folder import PROGRESS_FILE
    from alignment.training.callbacks import LOADING_PHASE, ProgressFile, report_phase
    from alignment.training.distributed import process_rank

    main = process_rank() == 0
    progress = ProgressFile(run_dir / PROGRESS_FILE)
    # Importing the training stack and loading the model take most of a minute before anything else
    # reports: say so at once (this module and the callbacks import no torch).
    if main:
        report_phase([progress], LOADING_PHASE)
    from annotation.jobs.kinds import JOB_KINDS

    spec = json.loads((run_dir / "job.json").read_text(encoding="utf-8"))
    kind = JOB_KINDS[spec["kind"]]
    config = kind.config_class.from_dict(spec["config"])
    result = kind.run(config, callbacks=[progress] if main else [])
    summary = kind.summarize(result)
    if main:
        (run_dir / "result.json").write_text(json.dumps(summary, default=float), encoding="utf-8")
    return summary


def failure_reason(exc: BaseException) -> str:
    """One line for people: the exception's type and its message, lines joined (a first line such as
    "could not load it from one of:" means little alone), cut at REASON_CHARS."""
    message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    reason = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return reason if len(reason) <= REASON_CHARS else reason[:REASON_CHARS - 1] + "…"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m annotation.jobs.worker RUN_DIR", file=sys.stderr)
        return 2
    run_dir = Path(argv[0])
    try:
        summary = run(run_dir)
    except Exception as exc:
        (run_dir / FAILURE_FILE).write_text(failure_reason(exc), encoding="utf-8")
        raise
    print(f"job finished: {json.dumps(summary, default=float)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
