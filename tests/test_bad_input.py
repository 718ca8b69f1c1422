"""Bad files through the real command line (issue 12, items 13-16 and 19): every one ends in a clear
report naming the file, the line and the reason, exit code 2, and nothing stored. Real files on disk,
a real FIFO, a real symlink to /dev/zero, real SQLite files, `python app.py` in a subprocess."""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest
from sqlalchemy import func, select

from storage.db import open_database, transaction
from storage.models import PairwiseLabel, Project, Prompt, Ranking, Response
from tests.test_cli import app, project_names, write_jsonl


def counts(db_path: Path) -> dict[str, int]:
    db = open_database(db_path)
    try:
        with transaction(db) as s:
            return {m.__tablename__: s.scalar(select(func.count()).select_from(m))
                    for m in (Project, Prompt, Response, PairwiseLabel, Ranking)}
    finally:
        db.engine.dispose()


def refused(tmp_path: Path, path: Path, *reason: str, timeout: float = 60) -> str:
    """Import `path` with --create into a fresh database: exit 2, one report naming the file, nothing stored."""
    db_path = tmp_path / "bad.db"
    result = app("import", path, "--db", db_path, "--project", "new", "--create", timeout=timeout)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert path.name in result.stderr, result.stderr
    for words in reason:
        assert words in result.stderr, result.stderr
    assert project_names(db_path) == [] and set(counts(db_path).values()) == {0}
    return result.stderr


# -- item 13: tracebacks become reports -------------------------------------------------------------


def test_a_damaged_gzip_file_is_reported(tmp_path):
    data = gzip.compress(b"".join(json.dumps({"prompt": f"question {i}"}).encode() + b"\n" for i in range(2000)))
    damaged = bytearray(data)
    damaged[len(data) // 2: len(data) // 2 + 64] = b"\xff" * 64
    path = tmp_path / "prompts.jsonl.gz"
    path.write_bytes(bytes(damaged))
    stderr = refused(tmp_path, path, "gzip-compressed data is damaged", "nothing was imported")
    assert len(stderr.strip().splitlines()) == 1


def test_deeply_nested_brackets_are_reported_by_line(tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_text('{"prompt": "fine"}\n{"prompt": ' + "[" * 100_000 + "]" * 100_000 + "}\n", encoding="utf-8")
    refused(tmp_path, path, "line 2: nested too deeply")


def test_a_deeply_nested_json_array_file_is_reported(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    refused(tmp_path, path, "nested too deeply")


def test_a_lone_surrogate_is_reported_by_line(tmp_path):
    path = tmp_path / "surrogate.jsonl"
    path.write_text('{"prompt": "fine"}\n{"prompt": "broken \\ud800 text"}\n', encoding="utf-8")
    refused(tmp_path, path, "line 2: 'prompt' holds an unpaired UTF-16 surrogate")


def test_a_lone_surrogate_in_a_pair_and_in_an_extra_column_is_reported(tmp_path):
    path = tmp_path / "pairs.jsonl"  # json.dumps writes a lone surrogate as the escape "\\ud83d"
    path.write_text(json.dumps({"prompt": "p1", "chosen": "good \ud83d", "rejected": "bad"}) + "\n"
                    + json.dumps({"prompt": "p2", "chosen": "good", "rejected": "bad", "source": "x\udfff"}) + "\n")
    refused(tmp_path, path, "line 1: 'chosen' holds an unpaired", "line 2: column 'source' holds an unpaired")


def test_a_zip_that_is_not_a_zip_is_reported(tmp_path):
    path = tmp_path / "dataset.zip"
    path.write_text('{"prompt": "this is not a zip"}\n', encoding="utf-8")
    refused(tmp_path, path, "not a zip archive")


def test_a_zipped_jsonl_file_imports(tmp_path):
    import zipfile

    path = tmp_path / "prompts.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("prompts.jsonl", '{"prompt": "zipped one"}\n{"prompt": "zipped two"}\n')
    result = app("import", path, "--db", tmp_path / "ok.db", "--project", "z", "--create")
    assert result.returncode == 0, result.stderr
    assert counts(tmp_path / "ok.db")["prompts"] == 2


# -- item 14: no hang, no blow-up --------------------------------------------------------------------


def test_a_fifo_is_refused_without_hanging(tmp_path):
    path = tmp_path / "x.jsonl"
    os.mkfifo(path)
    refused(tmp_path, path, "is a named pipe (FIFO), not a regular file or folder", timeout=60)


def test_a_symlink_to_dev_zero_is_refused(tmp_path):
    path = tmp_path / "zero.jsonl"
    path.symlink_to("/dev/zero")
    refused(tmp_path, path, "is a device, not a regular file or folder", timeout=60)


def test_an_over_long_line_is_refused_and_the_lines_after_it_are_still_read(tmp_path):
    path = tmp_path / "long.jsonl"
    with open(path, "wb") as f:
        f.write(b'{"prompt": "fine"}\n{"prompt": "' + b"x" * (17 << 20) + b'"}\n{"prompt": ""}\n')
    refused(tmp_path, path, "line 2: the line is longer than 16 MiB", "line 3: 'prompt' is empty")


# -- item 15: listwise rows are imported as rankings, or refused -------------------------------------


def test_a_ranking_with_a_negative_rank_is_refused(tmp_path):
    path = write_jsonl(tmp_path / "ranked.jsonl", [
        {"prompt": "Name a fruit.", "completions": ["apple", "pear", "plum"], "ranks": [0, 7, -1]}])
    refused(tmp_path, path, "line 1: rank 3 is -1: ranks must be whole numbers from 0 (best) up")


@pytest.mark.parametrize("row, reason", [
    ({"prompt": "p", "completions": ["a", "b"], "ranks": [0]}, "'ranks' has 1 numbers for 2 completions"),
    ({"prompt": "p", "completions": ["a", "b"], "ranks": [0, 0]}, "every completion has the same rank"),
    ({"prompt": "p", "completions": ["a", "b"], "ranks": [0, 1.5]}, "rank 2 is 1.5"),
    ({"prompt": "p", "completions": ["a"]}, "'completions' has 1 item(s): a ranking needs at least 2"),
    ({"prompt": "p", "completions": ["a", "a"]}, "completions 1 and 2 are identical"),
    ({"prompt": "p", "ranks": [0, 1]}, "missing column 'completions'"),
])
def test_bad_rankings_are_refused_with_their_reason(tmp_path, row, reason):
    refused(tmp_path, write_jsonl(tmp_path / "ranked.jsonl", [row]), f"line 1: {reason}")


def test_rankings_import_as_ranking_labels_with_ties_and_without_ranks(tmp_path):
    db_path = tmp_path / "rank.db"
    path = write_jsonl(tmp_path / "ranked.jsonl", [
        {"prompt": "Name a fruit.", "completions": ["apple", "pear", "plum"], "ranks": [1, 0, 1]},
        {"prompt": [{"role": "user", "content": "Name a colour."}],
         "completions": [[{"role": "assistant", "content": "red"}], [{"role": "assistant", "content": "blue"}],
                         [{"role": "assistant", "content": "green"}]]},
    ])
    result = app("import", path, "--db", db_path, "--project", "ranks", "--create")
    assert result.returncode == 0, result.stderr
    assert "2 rankings" in result.stdout
    db = open_database(db_path)
    with transaction(db) as s:
        project = s.scalar(select(Project).where(Project.name == "ranks"))
        assert project.mode.value == "listwise" and project.k == 3
        text = dict(s.execute(select(Response.id, Response.text)).all())
        orders = [[sorted(text[i] for i in group) for group in r.groups]
                  for r in s.scalars(select(Ranking).order_by(Ranking.id))]
    db.engine.dispose()
    assert orders == [[["pear"], ["apple", "plum"]], [["red"], ["blue"], ["green"]]]
    exported = tmp_path / "listwise.jsonl"
    assert app("export", exported, "--db", db_path, "--project", "ranks", "--format", "listwise").returncode == 0
    rows = [json.loads(line) for line in exported.read_text().splitlines()]
    assert [row["ranks"] for row in rows] == [[0, 1, 1], [0, 1, 2]]


def test_a_column_that_is_not_stored_is_named_in_the_report(tmp_path):
    path = write_jsonl(tmp_path / "extra.jsonl", [{"prompt": "p", "tags": ["a", "b"], "source": "web"}])
    result = app("import", path, "--db", tmp_path / "x.db", "--project", "x", "--create")
    assert result.returncode == 0, result.stderr
    assert "column 'tags' was not stored (1 rows)" in result.stdout


# -- item 16: duplicates --------------------------------------------------------------------------


def test_a_pair_repeated_in_a_file_is_stored_once_and_a_second_import_adds_nothing(tmp_path):
    db_path = tmp_path / "dup.db"
    rows = [{"prompt": "Is the sky blue?", "chosen": "Yes, on a clear day.", "rejected": "No."}] * 50
    rows += [{"prompt": "Is grass green?", "chosen": "Usually.", "rejected": "Never."}]
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    first = app("import", path, "--db", db_path, "--project", "d", "--create")
    assert first.returncode == 0, first.stderr
    assert "2 preference pairs" in first.stdout and "49 duplicate labels not stored again" in first.stdout
    assert counts(db_path)["pairwise_labels"] == 2 and counts(db_path)["responses"] == 4
    before = counts(db_path)
    again = app("import", path, "--db", db_path, "--project", "d")
    assert again.returncode == 0, again.stderr
    assert "51 duplicate labels not stored again" in again.stdout
    assert counts(db_path) == before


def test_a_ranking_imported_twice_is_stored_once(tmp_path):
    db_path = tmp_path / "dup.db"
    path = write_jsonl(tmp_path / "ranked.jsonl", [
        {"prompt": "p", "completions": ["a", "b", "c"], "ranks": [0, 1, 1]},
        {"prompt": "p", "completions": ["a", "c", "b"], "ranks": [0, 1, 1]}])  # the same ranking, ties reordered
    assert app("import", path, "--db", db_path, "--project", "r", "--create").returncode == 0
    assert app("import", path, "--db", db_path, "--project", "r").returncode == 0
    assert counts(db_path)["rankings"] == 1


# -- item 19 -------------------------------------------------------------------------------------------


def test_an_unknown_project_says_that_create_makes_it(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "p"}])
    result = app("import", path, "--db", tmp_path / "x.db", "--project", "nope")
    assert result.returncode == 2
    assert "unknown project 'nope'. There are no projects yet. To create it with this import, add --create" \
        in result.stderr


# -- item 13: a full disk during an import or an export ----------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 2 MiB file system (tmpfs; needs root), unmounted afterwards."""
    import subprocess

    mount_point = tmp_path / "tiny_disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=True)


def many_pairs(path: Path, n: int, text_chars: int = 300) -> Path:
    return write_jsonl(path, [{"prompt": f"question {i}", "chosen": f"good {i} " + "x" * text_chars,
                               "rejected": f"bad {i} " + "y" * text_chars} for i in range(n)])


def test_a_full_disk_during_an_import_is_reported_and_nothing_is_visible(tmp_path, tiny_disk):
    db_path = tiny_disk / "full.db"
    path = many_pairs(tmp_path / "pairs.jsonl", 20_000)
    result = app("import", path, "--db", db_path, "--project", "new", "--create", timeout=300)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == (f"error: no space left on the device writing {db_path}; free some space "
                                      "and run the command again")
    assert project_names(db_path) == []


def test_a_full_disk_during_an_export_is_reported_and_leaves_no_file(tmp_path, tiny_disk):
    db_path = tmp_path / "ok.db"
    assert app("import", many_pairs(tmp_path / "pairs.jsonl", 6000), "--db", db_path, "--project", "p",
               "--create").returncode == 0
    out = tiny_disk / "export.jsonl"
    result = app("export", out, "--db", db_path, "--project", "p")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "error: no space left on the device" in result.stderr
    assert list(tiny_disk.iterdir()) == []
