"""The command line as a user runs it: `python app.py ...` in a subprocess, against real SQLite files."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from storage.db import open_database, transaction
from storage.models import Item, PairwiseLabel, Project, Prompt, Response
from tests.conftest import PROJECT_ROOT

HH_VALID_PAIRS = 2308
HH_BAD_LINES = [87, 517, 926, 1104]

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "GRADIO_ANALYTICS_ENABLED": "False",
       "TOKENIZERS_PARALLELISM": "false"}


def app(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "app.py", *map(str, args)], cwd=PROJECT_ROOT, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def project_names(db_path: Path) -> list[str]:
    db = open_database(db_path, migrate=False)
    try:
        with transaction(db) as s:
            return list(s.scalars(select(Project.name).order_by(Project.name)))
    finally:
        db.engine.dispose()


# --------------------------------------------------------------------------------------------------
# --help
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command, mentions", [
    ([], ["serve", "import", "export", "generate", "--verbose"]),
    (["serve"], ["--db", "--model", "--host", "--port", "--no-worker", "--no-seed"]),
    (["import"], ["file", "--db", "--project", "--create", "--format", "--skip-invalid", "hh", "parquet"]),
    (["export"], ["out", "--db", "--project", "--format", "--datasets", "trl-chat", "pairs-from-rankings"]),
    (["generate"], ["--db", "--project", "--model", "--k", "--limit", "--temperature", "--top-p",
                    "--max-new-tokens", "--seed"]),
])
def test_help(command, mentions):
    result = app(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: app.py")
    for word in mentions:
        assert word in result.stdout, f"{word!r} missing from `app.py {' '.join(command)} --help`"


def test_no_command_is_a_usage_error():
    result = app()
    assert result.returncode == 2 and "usage: app.py" in result.stderr


# --------------------------------------------------------------------------------------------------
# import / export
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hh_cli_db(hh_path, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    db_path = tmp_path_factory.mktemp("cli-hh") / "hh.db"
    result = app("import", hh_path, "--db", db_path, "--project", "hh", "--create", "--skip-invalid")
    return db_path, result


def test_import_hh_with_skip_invalid_then_export_trl(hh_cli_db, tmp_path):
    db_path, imported = hh_cli_db
    assert imported.returncode == 0, imported.stderr
    assert f"{HH_VALID_PAIRS} preference pairs" in imported.stdout
    assert f"skipped {len(HH_BAD_LINES)} bad records" in imported.stdout
    for line in HH_BAD_LINES:
        assert f"line {line}: " in imported.stdout

    out = tmp_path / "hh-dpo.jsonl"
    exported = app("export", out, "--db", db_path, "--project", "hh", "--format", "trl")
    assert exported.returncode == 0, exported.stderr
    assert f"wrote {HH_VALID_PAIRS} trl rows" in exported.stdout
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == HH_VALID_PAIRS
    assert all(set(json.loads(line)) == {"prompt", "chosen", "rejected"} for line in lines)


def test_import_of_a_bad_file_exits_2_lists_every_bad_line_and_stores_nothing(tmp_path):
    db_path = tmp_path / "cli.db"
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"prompt": "fine"}\n'
                     b'{"prompt": "broken"\n'
                     b'{"prompt": ""}\n'
                     b'{"prompt": "also fine"}\n'
                     b'{"prompt": "caf\xe9"}\n')
    result = app("import", path, "--db", db_path, "--project", "new", "--create")
    assert result.returncode == 2
    assert "nothing was imported: 3 bad record(s)" in result.stderr
    assert "line 2: malformed JSON" in result.stderr
    assert "line 3: 'prompt' is empty" in result.stderr
    assert "line 5: not valid UTF-8" in result.stderr
    assert "Traceback" not in result.stderr and "imported" not in result.stdout
    assert project_names(db_path) == []


def test_import_of_a_missing_file_exits_2(tmp_path):
    result = app("import", tmp_path / "nowhere.jsonl", "--db", tmp_path / "cli.db", "--create")
    assert result.returncode == 2
    assert "error: no such file or folder" in result.stderr and "Traceback" not in result.stderr


def test_export_of_an_unknown_project_exits_2(tmp_path):
    out = tmp_path / "out.jsonl"
    result = app("export", out, "--db", tmp_path / "cli.db", "--project", "nope")
    assert result.returncode == 2
    assert "error: unknown project 'nope'" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


def test_export_onto_an_existing_folder_exits_2(hh_cli_db, tmp_path):
    db_path, _ = hh_cli_db
    result = app("export", tmp_path, "--db", db_path, "--project", "hh")
    assert result.returncode == 2
    assert "is a folder: a JSONL export writes a file" in result.stderr and "Traceback" not in result.stderr


def test_db_given_as_an_sqlalchemy_url(tmp_path):
    db_path = tmp_path / "url.db"
    url = f"sqlite:///{db_path.resolve()}"
    assert url.startswith("sqlite:////")
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "one"}, {"prompt": "two"}])
    result = app("import", prompts, "--db", url, "--project", "u", "--create")
    assert result.returncode == 0, result.stderr
    assert "2 new prompts" in result.stdout
    # The same file as a plain path: the prompts are already there.
    again = app("import", prompts, "--db", db_path, "--project", "u")
    assert again.returncode == 0, again.stderr
    assert "0 new prompts, 2 prompts already there" in again.stdout
    assert project_names(db_path) == ["u"]


# --------------------------------------------------------------------------------------------------
# generate
# --------------------------------------------------------------------------------------------------


def test_generate_stores_items_with_provenance(tiny_model_dir, tmp_path):
    db_path = tmp_path / "gen.db"
    prompts = write_jsonl(tmp_path / "prompts.jsonl",
                          [{"prompt": "Say hi."}, {"prompt": "Count to three."}, {"prompt": "Name a fruit."}])
    imported = app("import", prompts, "--db", db_path, "--project", "g", "--create")
    assert imported.returncode == 0, imported.stderr

    result = app("generate", "--db", db_path, "--project", "g", "--model", tiny_model_dir, "--limit", 2,
                 "--k", 2, "--max-new-tokens", 8, "--seed", 1, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "generated 2 items (4 responses) in project 'g'" in result.stdout

    db = open_database(db_path, migrate=False)
    try:
        with transaction(db) as s:
            items = s.scalars(select(Item).order_by(Item.id)).all()
            assert len(items) == 2
            for item in items:
                assert item.prompt.messages[0]["content"] in ("Say hi.", "Count to three.")
                assert [r.position for r in item.responses] == [0, 1]
                for response in item.responses:
                    assert response.model == str(tiny_model_dir)
                    assert response.source == "generated" and response.prompt_id == item.prompt_id
                    assert isinstance(response.seed, int)
                    # The project's temperature and top-p, the CLI's token limit and the batch seed.
                    assert response.sampling == {"temperature": 0.8, "top_p": 0.95, "max_new_tokens": 8,
                                                 "seed": response.seed}
                    assert 0 <= response.num_tokens <= 8 and response.finish_reason in ("stop", "length")
            assert s.query(Response).count() == 4 and s.query(PairwiseLabel).count() == 0
            # The third prompt is left for later (--limit 2).
            assert s.query(Prompt).count() == 3
    finally:
        db.engine.dispose()


# --------------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------------


def test_train_pl_dpo_uses_every_ranking_ties_included(tiny_model_dir, tmp_path):
    rows = [{"prompt": f"Name a colour {i}", "completions": ["Blue.", "Red.", "Bread"], "ranks": ranks}
            for i, ranks in enumerate([[0, 1, 2], [0, 0, 1], [0, 1, 1], [1, 0, 1], [0, 0, 0], [2, 1, 0]])]
    data = write_jsonl(tmp_path / "rankings.jsonl", rows)
    out = tmp_path / "pl"
    done = app("train", "pl-dpo", "--data", data, "--model", tiny_model_dir, "--out", out, "--max-steps", 1,
               "--batch-size", 2, "--max-length", 48, "--lora-r", 4, "--eval-fraction", 0.3, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "trained pl-dpo: 1 steps" in done.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_train"] + metrics["n_eval"] == len(rows) and metrics["with_ties"] == 4
    split = json.loads((out / "split.json").read_text())
    assert split["train"]["rows"] + split["held_out"]["rows"] == len(rows)


# --------------------------------------------------------------------------------------------------
# the same commands on PostgreSQL
# --------------------------------------------------------------------------------------------------


@pytest.mark.databases
def test_every_database_command_on_either_engine(new_db_url, tiny_model_dir, tmp_path):
    """import, generate, label, export and train --project against the URL given as --db."""
    from annotation.services import labelling

    url = new_db_url("cli", migrated=False)  # the first command migrates it
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"Name fruit number {i}."} for i in range(4)])
    assert app("import", prompts, "--db", url, "--project", "e", "--create").returncode == 0
    generated = app("generate", "--db", url, "--project", "e", "--model", tiny_model_dir, "--limit", 4,
                    "--max-new-tokens", 6, "--seed", 1, timeout=300)
    assert generated.returncode == 0, generated.stderr
    db = open_database(url, migrate=False)
    for n in range(4):
        labelling.submit_pairwise(db, labelling.next_item(db, "e", "alice"), "ab"[n % 2])
    db.engine.dispose()
    exported = app("export", tmp_path / "pairs.jsonl", "--db", url, "--project", "e")
    assert exported.returncode == 0, exported.stderr
    assert len((tmp_path / "pairs.jsonl").read_text().splitlines()) == 4
    trained = app("train", "rm", "--db", url, "--project", "e", "--model", tiny_model_dir, "--out", tmp_path / "rm",
                  "--max-steps", 1, "--batch-size", 2, "--max-length", 48, "--lora-r", 4, "--eval-fraction", 0.25,
                  timeout=300)
    assert trained.returncode == 0, trained.stderr
    assert (tmp_path / "rm" / "adapter_config.json").exists()


def test_serve_on_postgresql_seeds_and_serves(postgres_server, tmp_path):
    from tests.browser_support import ServerProcess

    url = postgres_server.new_database(migrated=False)
    server = ServerProcess(["--db", url, "--no-worker", "--runs", str(tmp_path / "runs")], tmp_path / "serve.log")
    try:
        assert "Running on local URL" in server.log()
        assert project_names(url) == ["starter"]  # migrated and seeded through the URL
    finally:
        server.stop()
        postgres_server.drop_database(url)
