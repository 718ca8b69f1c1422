"""A real OpenAI-compatible server for tests: `transformers serve` on a loopback port, offline.

It serves a copy of the tiny test model whose generation_config asks for sampling:
`transformers serve` decodes with the model's generation_config (greedy unless it says
`do_sample`), so without it K samples would be K copies. It honours neither `n` nor `logprobs`,
so the backend meets it as a server that needs one request per sample.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.browser_support import OFFLINE_ENV, free_port


class OpenAIServer:
    def __init__(self, model_dir: Path, log_path: Path, timeout: float = 180) -> None:
        self.model = str(model_dir)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = log_path
        self._log = open(log_path, "w")
        transformers_cli = Path(sys.executable).parent / "transformers"
        self.proc = subprocess.Popen(
            [str(transformers_cli), "serve", self.model, "--host", "127.0.0.1", "--port", str(self.port),
             "--device", "cpu", "--dtype", "float32"],
            env={**os.environ, **OFFLINE_ENV}, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_ready(timeout)

    def spec(self, endpoint: str = "") -> str:
        """The prefstudio model spec for this server (``endpoint``: '' for chat, '/completions')."""
        return f"openai:{self.base_url}{endpoint}#{self.model}"

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"transformers serve exited with {self.proc.returncode}:\n"
                                   f"{self.log_path.read_text(errors='replace')}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"transformers serve did not come up in {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def sampling_copy(model_dir: Path, out: Path) -> Path:
    shutil.copytree(model_dir, out)
    config_path = out / "generation_config.json"
    config = json.loads(config_path.read_text())
    config.update(do_sample=True, temperature=1.0, top_p=1.0, top_k=0)
    config_path.write_text(json.dumps(config))
    return out


def require_transformers_serve() -> None:
    from transformers.utils.import_utils import is_serve_available

    if not is_serve_available():
        pytest.skip("`transformers serve` needs fastapi, uvicorn and openai (bash .ci/setup --test installs them)")
