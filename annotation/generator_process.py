"""The background generator as its own low-priority process, supervised by the server.

Sampling saturates the CPU. Run as a thread inside the server it would compete with the web
handlers for the cores and the GIL, and annotators would feel it on every click; as a separate
process at the lowest scheduling priority (nice 19), leaving one core to the web server and the
browser on a CPU-only machine, the OS serves the UI first, and a crash in the model (out of
memory, say) cannot take the app down. The child publishes a `WorkerStatus` JSON
file that the UI reads; the parent restarts the child if it dies, with a back-off.

    python -m annotation.generator_process --db DB --status FILE
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from annotation.generation import GenerationWorker, WorkerStatus
from storage.db import open_database

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]


class GeneratorProcess:
    """Parent side: start, watch, restart and stop the generator child."""

    restart_after_seconds = 10.0

    def __init__(self, db_url: str, status_path: Path | None = None):
        self.db_url = db_url
        self.status_path = status_path or Path(tempfile.mkdtemp(prefix="prefstudio-gen-")) / "status.json"
        self.proc: subprocess.Popen | None = None
        self._exited_at: float | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "annotation.generator_process", "--db", self.db_url,
             "--status", str(self.status_path)],
            cwd=ROOT, start_new_session=True)  # own process group: a Ctrl-C in the terminal reaches us first
        self._exited_at = None

    def _supervise(self) -> None:
        if self.proc is None or self.proc.poll() is None:
            return
        if self._exited_at is None:
            self._exited_at = time.monotonic()
            log.error("generator exited with code %s; restarting in %.0f s", self.proc.returncode,
                      self.restart_after_seconds)
        elif time.monotonic() - self._exited_at > self.restart_after_seconds:
            self.start()

    @property
    def status(self) -> WorkerStatus:
        self._supervise()
        if self.proc is not None and self.proc.poll() is not None:
            return WorkerStatus(state="stopped", message=f"generator exited with code {self.proc.returncode}")
        return WorkerStatus.load(self.status_path)

    def wake(self) -> None:
        """The child polls the database every second; nothing to signal."""
        self._supervise()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _leave_a_core_for_the_ui() -> None:
    import torch

    if not torch.cuda.is_available():
        torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="prefstudio background generator (started by app.py serve)")
    parser.add_argument("--db", required=True, help="database path or SQLAlchemy URL")
    parser.add_argument("--status", required=True, type=Path, help="where to publish the worker status (JSON)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s generator: %(message)s")
    os.nice(19)
    _leave_a_core_for_the_ui()
    parent = os.getppid()
    worker = GenerationWorker(open_database(args.db), status_path=args.status)
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    worker.start()
    while worker.is_alive():
        if os.getppid() != parent:  # the server died without stopping us: do not linger as an orphan
            log.warning("server process is gone; stopping")
            worker.stop()
        worker.join(1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
