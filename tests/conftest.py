"""Shared fixtures: offline environment, the real HH-RLHF data, tiny models with the real tokenizer.

Tiny models are built from a config with random weights (fast, deterministic shape) and carry the
real SmolLM2 tokenizer, so chat templates, padding and special tokens behave as in production.
"""
from __future__ import annotations

import os

# Before anything imports gradio or huggingface_hub: no phoning home from tests.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Each test process and every server, job and CLI it starts runs torch with one thread: the suite
# runs three test processes on two cores, where more threads only wait on each other.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PREFSTUDIO_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))
HH_FILE = SHARED_DATA / "hh-rlhf-harmless-base-test.jsonl.gz"


def pytest_configure(config):
    try:
        from playwright.sync_api import expect
    except ImportError:
        pass
    else:
        # Playwright's 5 s default for `expect` is shorter than one Gradio round trip on a loaded
        # machine (two test processes beside the servers they start), where pages stay "processing".
        expect.set_options(timeout=20_000)
    config.addinivalue_line("markers", "e2e: end-to-end test on the real embedded SmolLM2 model (slow)")
    config.addinivalue_line("markers", "browser: drives the real UI in headless Chromium through Playwright")
    config.addinivalue_line("markers", "databases: runs once on SQLite and once on a throwaway PostgreSQL server")


# Seconds each slow test file took (three test processes on two cores, all 860 tests in 18 min).
# Under `-n 3 --dist loadfile --no-loadscope-reorder` each process takes the next whole file in
# collection order, so the slowest go first: started last, one of them would be the run's tail.
# A file not listed counts as fast; the figures only need to be roughly right.
FILE_SECONDS = {
    "test_browser_train": 382, "test_multiprocess_training": 313, "test_rl_training": 155,
    "test_browser_annotate": 126, "test_jobs": 121, "test_cli": 112, "test_accounts_web": 112,
    "test_browser_rl": 111, "test_browser": 104, "test_roles": 92, "test_evaluation": 89,
    "test_import_concurrency": 82, "test_browser_review": 75, "test_labelling_integrity": 70,
    "test_training": 69, "test_bad_train_input": 66, "test_browser_data": 64, "test_bad_input": 55,
    "test_browser_team_admin": 54, "test_rl_cli": 52, "test_e2e_serve": 52, "test_import_export": 50,
    "test_alignment_models": 47, "test_generation": 44, "test_compare": 43, "test_labelling": 42,
    "test_browser_compare": 39, "test_browser_remote": 39, "test_browser_judge": 38, "test_hardening": 37,
    "test_browser_roles": 37, "test_remote_generation": 31, "test_rl_jobs": 28, "test_permissions": 27,
    "test_review": 23, "test_sampling": 22, "test_best_of_n": 21, "test_arena": 21,
}


def pytest_collection_modifyitems(config, items):
    # Slowest files first (a stable sort: each file's tests stay together and in order).
    items.sort(key=lambda item: -FILE_SECONDS.get(item.path.stem, 0))


@pytest.fixture(scope="session")
def hh_path() -> Path:
    if not HH_FILE.exists():
        pytest.skip(f"HH-RLHF test split not found at {HH_FILE} (it lives in ../shared/data beside the project)")
    return HH_FILE


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    """The real SmolLM2 tokenizer (from the embedded GGUF), saved as a normal tokenizer folder."""
    from alignment.models import embedded_gguf_path
    from transformers import AutoTokenizer

    gguf = embedded_gguf_path()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    out = tmp_path_factory.mktemp("tokenizer")
    tok.save_pretrained(out)
    return out


def build_tiny_model(tokenizer_dir: Path, out: Path, seed: int = 0, num_labels: int | None = None,
                     initializer_range: float = 0.02) -> Path:
    """A 2-layer Llama with random weights and the real tokenizer, saved as an HF folder.

    At the usual ``initializer_range`` its next-token distribution is nearly uniform over the 49k
    tokens; a larger one gives peaked distributions, like a trained model's (the RL tests need that).
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, initializer_range=initializer_range,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tokenizer_dir, tmp_path_factory) -> Path:
    return build_tiny_model(tokenizer_dir, tmp_path_factory.mktemp("tiny-llama"))


DATABASES = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc):
    # Tests marked `databases` run once per engine: the same test, not a copy, on both.
    if "db_backend" in metafunc.fixturenames and metafunc.definition.get_closest_marker("databases"):
        metafunc.parametrize("db_backend", DATABASES, indirect=True)


@pytest.fixture(scope="session")
def postgres_server():
    """One throwaway PostgreSQL server for the whole session (see tests/postgres_support.py)."""
    from tests.postgres_support import PostgresServer, unavailable_reason

    reason = unavailable_reason()
    if reason:
        pytest.skip(f"PostgreSQL side skipped: {reason}")
    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture
def db_backend(request) -> str:
    """The database engine of this test: sqlite unless the test is marked `databases`."""
    return getattr(request, "param", "sqlite")


@pytest.fixture
def new_db_url(db_backend, tmp_path, request):
    """Makes fresh, migrated databases on this test's engine: ``new_db_url(name)`` -> path or URL."""
    made: list[str] = []
    server = request.getfixturevalue("postgres_server") if db_backend == "postgresql" else None

    def make(name: str = "test", migrated: bool = True) -> str:
        if server is None:
            return str(tmp_path / f"{name}.db")
        made.append(server.new_database(migrated=migrated))
        return made[-1]

    yield make
    for url in made:
        server.drop_database(url)


@pytest.fixture
def db(new_db_url):
    """A fresh, migrated database for one test: a SQLite file, or a PostgreSQL database for tests
    marked `databases` (run on both)."""
    from storage.db import open_database

    database = open_database(new_db_url())
    yield database
    database.engine.dispose()  # a PostgreSQL database with open connections cannot be dropped


@pytest.fixture(scope="session")
def tiny_reward_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A reward model on the tiny Llama, trained for 2 steps on 4 canned pairs."""
    import json

    from alignment.training import RewardConfig, train_reward_model

    tmp = tmp_path_factory.mktemp("tiny-rm")
    rows = [{"prompt": f"Question {i}: is it true?", "chosen": "Sure, yes", "rejected": "No, never"} for i in range(4)]
    (tmp / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    config = RewardConfig(model=str(tiny_model_dir), data=str(tmp / "pairs.jsonl"), out=str(tmp / "rm"),
                          max_steps=2, batch_size=2, lr=1e-2, eval_fraction=0.0, max_length=64, lora_r=4,
                          lora_alpha=8, lora_dropout=0.0)
    return train_reward_model(config).out_dir
