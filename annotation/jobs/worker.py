"""The job subprocess: `python -m annotation.jobs.worker RUN_DIR`.

Reads `RUN_DIR/job.json` ({"kind", "config"}), runs the kind's function (training, or best-of-N) with
a progress file the UI tails (`RUN_DIR/progress.jsonl`), writes its summary to `RUN_DIR/result.json`
on success and exits 0;
any exception prints its traceback to the log (stdout/stderr, redirected by the runner into
`RUN_DIR/log.txt`) and exits 1. The runner owns everything else (status, cancel, resume).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def run(run_dir: Path) -> dict:
    from alignment.run_folder import PROGRESS_FILE
    from alignment.training.callbacks import ProgressFile
    from annotation.jobs.kinds import JOB_KINDS

    spec = json.loads((run_dir / "job.json").read_text(encoding="utf-8"))
    kind = JOB_KINDS[spec["kind"]]
    config = kind.config_class.from_dict(spec["config"])
    result = kind.run(config, callbacks=[ProgressFile(run_dir / PROGRESS_FILE)])
    summary = kind.summarize(result)
    (run_dir / "result.json").write_text(json.dumps(summary, default=float), encoding="utf-8")
    return summary


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m annotation.jobs.worker RUN_DIR", file=sys.stderr)
        return 2
    summary = run(Path(argv[0]))
    print(f"job finished: {json.dumps(summary, default=float)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
