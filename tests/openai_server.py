"""A real OpenAI-compatible server for tests: `transformers serve` on a loopback port, offline.

It serves a copy of the tiny test model whose generation_config asks for sampling:
`transformers serve` decodes with the model's generation_config (greedy unless it says
`do_sample`), so without it K samples would be K copies. It honours neither `n` nor `logprobs`,
so the backend meets it as a server that needs one request per sample.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from tests.browser_support import HttpProcess, free_port


class OpenAIServer(HttpProcess):
    def __init__(self, model_dir: Path, log_path: Path, timeout: float = 180) -> None:
        self.model = str(model_dir)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        transformers_cli = Path(sys.executable).parent / "transformers"
        super().__init__([str(transformers_cli), "serve", self.model, "--host", "127.0.0.1", "--port", str(self.port),
                          "--device", "cpu", "--dtype", "float32"], log_path,
                         f"http://127.0.0.1:{self.port}/health", timeout=timeout)

    def spec(self, endpoint: str = "") -> str:
        """The prefstudio model spec for this server (``endpoint``: '' for chat, '/completions')."""
        return f"openai:{self.base_url}{endpoint}#{self.model}"


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
