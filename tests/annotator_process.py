"""One annotator as its own OS process, for the concurrency tests and bench/storage.py.

    python -m tests.annotator_process DB PROJECT NAME LABELS GO_FILE [THINK_MS [WARMUP_PROJECT]]

With WARMUP_PROJECT, first labels one item of that project (as a running server has served
requests before: a fresh process's first transaction also connects and compiles its SQL, tens of
milliseconds that no submission in the app pays). Then writes GO_FILE.ready-NAME and waits until GO_FILE exists (so all annotators start together, after their imports), then asks for
LABELS items one after another and submits each twice (a double click), reading each item for a
random time first when THINK_MS is given (exponential, that mean; without it, none), and prints one JSON line
per submission: item, label ids, whether it was a duplicate, how long the submission took and
when it ended (wall clock).
"""
from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

from annotation.services import labelling
from storage.db import open_database


def main(argv: list[str]) -> int:
    db_url, project, name, labels, go_file = argv[0], argv[1], argv[2], int(argv[3]), Path(argv[4])
    think_s = float(argv[5]) / 1000 if len(argv) > 5 else 0.0
    warmup_project = argv[6] if len(argv) > 6 else None
    db = open_database(db_url, migrate=False)
    if warmup_project:
        view = labelling.next_item(db, warmup_project, name)
        labelling.submit_pairwise(db, view, "a")
    Path(f"{go_file}.ready-{name}").touch()
    while not go_file.exists():
        time.sleep(0.01)
    for _ in range(labels):
        view = labelling.next_item(db, project, name)
        if view is None:
            break
        if think_s:
            time.sleep(random.expovariate(1 / think_s))
        for _ in range(2):
            started = time.perf_counter()
            receipt = labelling.submit_pairwise(db, view, random.choice("ab"))
            print(json.dumps({"item": receipt.item_id, "labels": receipt.label_ids, "duplicate": receipt.duplicate,
                              "seconds": time.perf_counter() - started, "ended": time.time()}), flush=True)
    db.engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
