"""Import into and export out of a real SQLite file through the services (no mocks).

The HH-RLHF harmless test split goes in as preference pairs and comes back out in TRL's formats,
checked against the gzip file read independently here; every kind of bad input is refused with its
line and leaves every table as it was; labels made through the real labelling services export in
every format.
"""
from __future__ import annotations

import csv
import gzip
import json
import random
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select

from annotation.services import labelling as L
from annotation.services.data import export_labels, import_file
from annotation.services.projects import project_names
from storage.db import open_database, transaction
from storage.errors import InputError
from storage.models import (
    Base, Choice, Item, LabelSource, Mode, PairwiseLabel, Project, Prompt, Response,
)
from tests.factories import make_items, make_project

pytestmark = pytest.mark.databases

HH_VALID_PAIRS = 2308
HH_BAD_LINES = [87, 517, 926, 1104]  # the four HH pairs whose chosen reply is empty


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def table_counts(db) -> dict[str, int]:
    """Row count of every table in the schema (alembic's own table aside)."""
    with transaction(db) as s:
        return {t.name: s.scalar(select(func.count()).select_from(t)) for t in Base.metadata.sorted_tables}


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def render_hh(messages: list[dict]) -> str:
    """An HH transcript rendered here, independently of storage.exporters."""
    tags = {"user": "\n\nHuman:", "assistant": "\n\nAssistant:"}
    return "".join(m["content"] if m["role"] == "system" else f"{tags[m['role']]} {m['content']}"
                   for m in messages)


def seeded_project(db, name: str = "p") -> str:
    """A project with a few existing rows, so 'nothing changed' is checked against non-empty tables."""
    make_project(db, name)
    make_items(db, name, 2)
    return name


def assert_refused(db, path, match: str, project: str = "p", **kwargs) -> InputError:
    before = table_counts(db)
    with pytest.raises(InputError, match=match) as caught:
        import_file(db, path, project, **kwargs)
    assert table_counts(db) == before
    return caught.value


# --------------------------------------------------------------------------------------------------
# The real HH-RLHF file
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hh_originals(hh_path) -> list[dict]:
    with gzip.open(hh_path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def hh_valid(hh_originals) -> list[dict]:
    """The source lines that should have been imported, in file order."""
    return [row for line, row in enumerate(hh_originals, 1) if line not in HH_BAD_LINES]


@pytest.fixture(scope="module")
def hh_db(hh_path, tmp_path_factory):
    db = open_database(tmp_path_factory.mktemp("hh") / "hh.db")
    result = import_file(db, hh_path, "hh", create=True, skip_invalid=True)
    return db, result


def test_hh_import_stores_every_valid_pair_with_two_responses(hh_db, hh_originals):
    db, result = hh_db
    assert len(hh_originals) == HH_VALID_PAIRS + len(HH_BAD_LINES)
    assert result.records == result.pairs_added == HH_VALID_PAIRS
    assert result.format == "jsonl" and result.project == "hh"
    assert [e.line for e in result.skipped] == HH_BAD_LINES
    assert all(str(e).startswith(f"line {e.line}: ") and "empty" in e.reason for e in result.skipped)
    assert f"skipped {len(HH_BAD_LINES)} bad records" in result.summary()
    counts = table_counts(db)
    assert counts["pairwise_labels"] == HH_VALID_PAIRS
    assert counts["responses"] == 2 * HH_VALID_PAIRS
    assert counts["prompts"] == result.prompts_added
    assert result.prompts_added + result.prompts_existing == HH_VALID_PAIRS
    assert counts["items"] == counts["rankings"] == counts["ratings"] == counts["rewrites"] == 0
    with transaction(db) as s:
        project = s.scalar(select(Project).where(Project.name == "hh"))
        assert project.mode == Mode.pairwise and project.k == 2
        labels = s.scalars(select(PairwiseLabel)).all()
        for label in labels:
            assert label.source == LabelSource.imported and label.choice == Choice.a
            assert label.user_id is None and label.item_id is None and label.shown_order == [0, 1]
            a, b = label.response_a, label.response_b
            assert a.prompt_id == b.prompt_id == label.prompt_id
            assert (a.source, b.source) == ("import", "import") and (a.position, b.position) == (0, 1)
        # Two responses per pair, none shared between pairs.
        response_ids = [rid for label in labels for rid in (label.response_a_id, label.response_b_id)]
        assert len(set(response_ids)) == 2 * HH_VALID_PAIRS


def test_hh_prompts_are_stored_as_chats_ending_with_a_user_turn(hh_db):
    db, _ = hh_db
    with transaction(db) as s:
        prompts = s.scalars(select(Prompt)).all()
    assert len(prompts) > 2000
    for prompt in prompts:
        assert prompt.is_chat is True and prompt.source == "import"
        assert prompt.messages and prompt.messages[-1]["role"] == "user"
        assert all(set(m) == {"role", "content"} and m["content"].strip() for m in prompt.messages)


def test_hh_import_without_skip_invalid_is_refused_and_nothing_is_written(db, hh_path):
    before = table_counts(db)
    with pytest.raises(InputError) as caught:
        import_file(db, hh_path, "hh", create=True)
    message = str(caught.value)
    for line in HH_BAD_LINES:
        assert f"line {line}: the chosen response (last Assistant turn) is empty" in message
    assert [e.line for e in caught.value.errors] == HH_BAD_LINES
    assert table_counts(db) == before
    assert "hh" not in project_names(db)  # the project created for the import was rolled back too


def test_hh_import_into_an_existing_project_is_refused_as_a_whole(db, hh_path):
    seeded_project(db, "hh")
    error = assert_refused(db, hh_path, "line 87: ", project="hh")
    assert len(error.errors) == len(HH_BAD_LINES)


def test_hh_trl_export_reproduces_every_transcript(hh_db, hh_valid, tmp_path):
    db, _ = hh_db
    out = tmp_path / "hh-trl.jsonl"
    result = export_labels(db, "hh", "trl", out)
    assert result.rows == HH_VALID_PAIRS and result.path == out
    rows = read_jsonl(out)
    assert len(rows) == HH_VALID_PAIRS
    for row, original in zip(rows, hh_valid):
        assert set(row) == {"prompt", "chosen", "rejected"}
        assert row["prompt"].endswith("\n\nAssistant:")
        assert row["prompt"] + " " + row["chosen"] == original["chosen"]
        assert row["prompt"] + " " + row["rejected"] == original["rejected"]


def test_hh_trl_chat_export_keeps_messages_and_responses(hh_db, hh_valid, tmp_path):
    db, _ = hh_db
    out = tmp_path / "hh-chat.jsonl"
    assert export_labels(db, "hh", "trl-chat", out).rows == HH_VALID_PAIRS
    rows = read_jsonl(out)
    assert len(rows) == HH_VALID_PAIRS
    for row, original in zip(rows, hh_valid):
        assert row["prompt"][-1]["role"] == "user"
        for side in ("chosen", "rejected"):
            assert [m["role"] for m in row[side]] == ["assistant"]
            reply = row[side][-1]["content"]
            # The prompt messages and the final assistant text rebuild the source transcript exactly.
            assert render_hh(row["prompt"]) + "\n\nAssistant: " + reply == original[side]


def test_hh_export_as_datasets_folder_loads_back(hh_db, tmp_path):
    import datasets

    db, _ = hh_db
    jsonl, folder = tmp_path / "hh.jsonl", tmp_path / "hh-ds"
    export_labels(db, "hh", "trl", jsonl)
    result = export_labels(db, "hh", "trl", folder, as_datasets=True)
    assert result.rows == HH_VALID_PAIRS and folder.is_dir()
    ds = datasets.load_from_disk(str(folder))
    assert ds.num_rows == HH_VALID_PAIRS
    assert set(ds.column_names) == {"prompt", "chosen", "rejected"}
    rows = read_jsonl(jsonl)
    assert ds[0] == rows[0] and ds[-1] == rows[-1]


# --------------------------------------------------------------------------------------------------
# Bad input: refused with the line and the reason, and no table changes
# --------------------------------------------------------------------------------------------------


def test_malformed_jsonl_line_is_refused(db, tmp_path):
    seeded_project(db)
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "one"}\n{"prompt": "two"\n{"prompt": "three"}\n', encoding="utf-8")
    error = assert_refused(db, path, r"line 2: malformed JSON")
    assert [e.line for e in error.errors] == [2]
    # Even with skip_invalid the good lines go in, but the bad one is still reported.
    result = import_file(db, path, "p", skip_invalid=True)
    assert result.prompts_added == 2 and [e.line for e in result.skipped] == [2]


def test_missing_column_is_refused(db, tmp_path):
    seeded_project(db)
    path = write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": "q1", "chosen": "good", "rejected": "bad"},
        {"prompt": "q2", "chosen": "good"},
    ])
    assert_refused(db, path, r"line 2: missing column 'rejected'")


def test_empty_text_is_refused(db, tmp_path):
    seeded_project(db)
    path = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "fine"}, {"prompt": "also fine"}, {"prompt": "   "}])
    assert_refused(db, path, r"line 3: 'prompt' is empty")


def test_oversized_text_is_refused(db, tmp_path):
    seeded_project(db)
    path = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "fine"}, {"prompt": "x" * 100_001}])
    assert_refused(db, path, r"line 2: 'prompt' is 100,001 characters long, over the limit of 100,000")
    # Exactly at the limit is fine.
    write_jsonl(path, [{"prompt": "y" * 100_000}])
    assert import_file(db, path, "p").prompts_added == 1


def test_invalid_utf8_line_is_refused(db, tmp_path):
    seeded_project(db)
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n{"prompt": "fine"}\n')
    assert_refused(db, path, r"line 2: not valid UTF-8 \(byte 0xe9")


def test_csv_with_a_missing_column_is_refused(db, tmp_path):
    seeded_project(db)
    path = tmp_path / "pairs.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["prompt", "chosen"])
        writer.writerow(["q1", "good"])
        writer.writerow(["q2", "better"])
    error = assert_refused(db, path, r"line 1: missing column 'rejected'")
    assert [e.line for e in error.errors] == [1, 2]
    assert "line 2: missing column 'rejected'" in str(error)


def test_import_into_an_unknown_project_is_refused(db, tmp_path):
    seeded_project(db, "real")
    path = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "hello"}])
    assert_refused(db, path, r"unknown project 'nope'.*Known projects: real", project="nope")


def test_export_of_an_unknown_project_is_refused_and_writes_nothing(db, tmp_path):
    seeded_project(db, "real")
    before = table_counts(db)
    for as_datasets in (False, True):
        out = tmp_path / f"out-{as_datasets}"
        with pytest.raises(InputError, match=r"unknown project 'nope'.*Known projects: real"):
            export_labels(db, "nope", "trl", out, as_datasets=as_datasets)
        assert not out.exists()
    assert table_counts(db) == before


def test_a_missing_file_is_refused(db, tmp_path):
    seeded_project(db)
    assert_refused(db, tmp_path / "nowhere.jsonl", r"no such file or folder: .*nowhere\.jsonl")
    assert_refused(db, tmp_path / "nowhere.jsonl", r"no such file", project="new", create=True)
    assert "new" not in project_names(db)


def test_an_empty_file_is_refused(db, tmp_path):
    seeded_project(db)
    for name, content in (("empty.jsonl", b""), ("blank.jsonl", b"\n \n"), ("header-only.csv", b"prompt\n")):
        path = tmp_path / name
        path.write_bytes(content)
        assert_refused(db, path, r"file: the file is empty")
        # --skip-invalid cannot turn a file-level problem into an empty success.
        assert_refused(db, path, r"file: the file is empty", project="fresh", create=True, skip_invalid=True)
    assert "fresh" not in project_names(db)


def test_a_file_with_only_bad_records_is_refused_even_with_skip_invalid(db, tmp_path):
    seeded_project(db)
    path = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": ""}, {"prompt": 3}])
    error = assert_refused(db, path, r"line 1: 'prompt' is empty", skip_invalid=True)
    assert [e.line for e in error.errors] == [1, 2]


# --------------------------------------------------------------------------------------------------
# Prompt-only files and de-duplication
# --------------------------------------------------------------------------------------------------


def stored_prompts(db, project: str) -> list[Prompt]:
    with transaction(db) as s:
        return list(s.scalars(select(Prompt).join(Project).where(Project.name == project).order_by(Prompt.id)))


def test_jsonl_prompts_import_once(db, tmp_path):
    make_project(db, "p")
    path = write_jsonl(tmp_path / "prompts.jsonl", [
        {"prompt": "What is 2+2?", "id": 7},
        {"prompt": "Name a colour."},
        {"prompt": "What is 2+2?"},  # a duplicate inside the file
    ])
    first = import_file(db, path, "p")
    assert (first.records, first.prompts_added, first.prompts_existing, first.pairs_added) == (3, 2, 1, 0)
    prompts = stored_prompts(db, "p")
    assert [p.messages for p in prompts] == [[{"role": "user", "content": "What is 2+2?"}],
                                             [{"role": "user", "content": "Name a colour."}]]
    assert all(p.is_chat is False and p.source == "import" for p in prompts)
    assert prompts[0].meta == {"id": 7}
    before = table_counts(db)
    again = import_file(db, path, "p")
    assert (again.prompts_added, again.prompts_existing) == (0, 3)
    assert table_counts(db) == before
    counts = table_counts(db)
    assert counts["responses"] == counts["items"] == counts["pairwise_labels"] == 0


def test_csv_prompts_import_once(db, tmp_path):
    make_project(db, "p")
    path = tmp_path / "prompts.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["prompt", "topic"])
        writer.writerow(["Write a haiku about rain.", "poetry"])
        writer.writerow(["Explain, briefly, what a \"hash\" is.\nUse one line.", "cs"])
    result = import_file(db, path, "p")
    assert result.format == "csv" and result.prompts_added == 2
    prompts = stored_prompts(db, "p")
    assert [p.messages[0]["content"] for p in prompts] == [
        "Write a haiku about rain.", "Explain, briefly, what a \"hash\" is.\nUse one line."]
    assert [p.meta for p in prompts] == [{"topic": "poetry"}, {"topic": "cs"}]
    before = table_counts(db)
    assert import_file(db, path, "p").prompts_added == 0
    assert table_counts(db) == before


def test_parquet_messages_import_once(db, tmp_path):
    make_project(db, "p")
    conversations = [
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}],
        [{"role": "user", "content": "Tell me a joke."}, {"role": "assistant", "content": "Why did..."},
         {"role": "user", "content": "Another one."}],
    ]
    path = tmp_path / "chats.parquet"
    pq.write_table(pa.Table.from_pylist([{"messages": c} for c in conversations]), path)
    result = import_file(db, path, "p")
    assert result.format == "parquet" and result.prompts_added == 2
    prompts = stored_prompts(db, "p")
    assert [p.messages for p in prompts] == conversations and all(p.is_chat for p in prompts)
    before = table_counts(db)
    again = import_file(db, path, "p")
    assert (again.prompts_added, again.prompts_existing) == (0, 2)
    assert table_counts(db) == before


def test_the_same_prompt_in_another_project_is_stored_there_too(db, tmp_path):
    make_project(db, "one")
    make_project(db, "two")
    path = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "shared"}])
    assert import_file(db, path, "one").prompts_added == 1
    assert import_file(db, path, "two").prompts_added == 1


# --------------------------------------------------------------------------------------------------
# Exports of labels made through the labelling services
# --------------------------------------------------------------------------------------------------


def shown(view: L.ItemView, order: list[int]) -> L.ItemView:
    """The view with its responses shown in `order` (item positions), as a shuffle could have put them."""
    by_position = {r.position: r for r in view.responses}
    return replace(view, responses=[by_position[p] for p in order])


def prompt_of(view: L.ItemView) -> str:
    return view.prompt_messages[0]["content"]


@pytest.fixture
def pairwise_labels(db):
    """Six pairwise items labelled a/b in both shown orders, tie, and both bad with a rewrite."""
    make_project(db, "pw")
    make_items(db, "pw", 6)
    plan = [("a", [0, 1]), ("a", [1, 0]), ("b", [0, 1]), ("b", [1, 0]), ("tie", [1, 0]), ("both_bad", [0, 1])]
    expected = {}  # prompt -> (chosen, rejected) for the preference labels
    rewrite_prompt = None
    for choice, order in plan:
        view = shown(L.next_item(db, "pw", "alice"), order)
        rewrite = "A careful, correct answer." if choice == "both_bad" else None
        L.submit_pairwise(db, view, choice, rewrite=rewrite)
        a, b = view.responses[0].text, view.responses[1].text
        if choice in ("a", "b"):
            expected[prompt_of(view)] = (a, b) if choice == "a" else (b, a)
        elif choice == "both_bad":
            rewrite_prompt = prompt_of(view)
    return expected, rewrite_prompt


def test_trl_export_follows_the_choice_and_the_shown_order(db, pairwise_labels, tmp_path):
    expected, _ = pairwise_labels
    out = tmp_path / "trl.jsonl"
    assert export_labels(db, "pw", "trl", out).rows == 4
    rows = read_jsonl(out)
    # Ties and "both bad" carry no preference: only the a/b labels come out.
    assert {r["prompt"]: (r["chosen"], r["rejected"]) for r in rows} == expected
    # Concretely: A chosen when shown [1, 0] is the item's second response.
    assert expected["q1"] == ("answer 1.1", "answer 1.0") and expected["q3"] == ("answer 3.0", "answer 3.1")


def test_trl_chat_export_of_plain_prompts(db, pairwise_labels, tmp_path):
    expected, _ = pairwise_labels
    out = tmp_path / "trl-chat.jsonl"
    assert export_labels(db, "pw", "trl-chat", out).rows == 4
    for row in read_jsonl(out):
        assert len(row["prompt"]) == 1 and row["prompt"][0]["role"] == "user"
        chosen, rejected = expected[row["prompt"][0]["content"]]
        assert row["chosen"] == [{"role": "assistant", "content": chosen}]
        assert row["rejected"] == [{"role": "assistant", "content": rejected}]


def test_sft_export_gives_the_rewrite_written_after_both_bad(db, pairwise_labels, tmp_path):
    _, rewrite_prompt = pairwise_labels
    out = tmp_path / "sft.jsonl"
    assert export_labels(db, "pw", "sft", out).rows == 1
    assert read_jsonl(out) == [{"prompt": rewrite_prompt, "completion": "A careful, correct answer."}]


def test_pairwise_project_has_no_rankings_or_ratings_to_export(db, pairwise_labels, tmp_path):
    for fmt in ("listwise", "pairs-from-rankings", "ratings"):
        for as_datasets in (False, True):
            out = tmp_path / f"{fmt}-{as_datasets}"
            with pytest.raises(InputError, match=f"project 'pw' has no labels to export as {fmt}"):
                export_labels(db, "pw", fmt, out, as_datasets=as_datasets)
            assert not out.exists()


def test_only_ties_and_both_bad_without_rewrite_export_nothing(db, tmp_path):
    make_project(db, "p")
    make_items(db, "p", 2)
    L.submit_pairwise(db, L.next_item(db, "p", "alice"), "tie")
    L.submit_pairwise(db, L.next_item(db, "p", "alice"), "both_bad")
    exports = tmp_path / "exports"
    exports.mkdir()
    for fmt in ("trl", "trl-chat", "sft"):
        out = exports / f"{fmt}.jsonl"
        with pytest.raises(InputError, match=f"project 'p' has no labels to export as {fmt}"):
            export_labels(db, "p", fmt, out)
        assert not out.exists()
    assert list(exports.iterdir()) == []  # no temporary file left behind either


def test_export_onto_a_folder_or_a_file_of_the_wrong_kind_is_refused(db, pairwise_labels, tmp_path):
    folder, file = tmp_path / "taken-folder", tmp_path / "taken.jsonl"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    file.write_text("mine")
    with pytest.raises(InputError, match="is a folder: a JSONL export writes a file"):
        export_labels(db, "pw", "trl", folder)
    with pytest.raises(InputError, match="is a file: a datasets export writes a folder"):
        export_labels(db, "pw", "trl", file, as_datasets=True)
    assert (folder / "keep.txt").read_text() == "mine" and file.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("test.db")) == [
        "taken-folder", "taken.jsonl"]  # no temporary file left behind


def test_unknown_export_format_is_refused(db, pairwise_labels, tmp_path):
    with pytest.raises(InputError, match="unknown export format 'csv'"):
        export_labels(db, "pw", "csv", tmp_path / "x")
    assert not (tmp_path / "x").exists()


@pytest.fixture
def rankings(db):
    """A listwise project (K=4): one strict ranking and one with a tie in second place."""
    make_project(db, "lw", mode="listwise", k=4)
    make_items(db, "lw", 2)
    strict = L.next_item(db, "lw", "alice", rng=random.Random(3))
    strict_groups = L.groups_from_ranks(strict, [3, 1, 4, 2])
    L.submit_ranking(db, strict, strict_groups)
    tied = L.next_item(db, "lw", "alice", rng=random.Random(4))
    tied_groups = L.groups_from_ranks(tied, [2, 1, 2, 3])
    L.submit_ranking(db, tied, tied_groups)
    with transaction(db) as s:
        text = {r.id: r.text for r in s.scalars(select(Response))}
    return {prompt_of(strict): [[text[i] for i in g] for g in strict_groups],
            prompt_of(tied): [[text[i] for i in g] for g in tied_groups]}


def test_listwise_export_is_best_first_with_equal_ranks_for_ties(db, rankings, tmp_path):
    out = tmp_path / "listwise.jsonl"
    assert export_labels(db, "lw", "listwise", out).rows == 2
    rows = {r["prompt"]: r for r in read_jsonl(out)}
    assert set(rows) == set(rankings)
    for prompt, groups in rankings.items():
        row = rows[prompt]
        assert row["completions"] == [t for g in groups for t in g]
        assert row["ranks"] == [rank for rank, g in enumerate(groups) for _ in g]
    ranks = sorted(tuple(r["ranks"]) for r in rows.values())
    assert ranks == [(0, 1, 1, 2), (0, 1, 2, 3)]


def test_pairs_from_rankings(db, rankings, tmp_path):
    out = tmp_path / "pairs.jsonl"
    assert export_labels(db, "lw", "pairs-from-rankings", out).rows == 6 + 5
    rows = read_jsonl(out)
    for prompt, groups in rankings.items():
        place = {t: rank for rank, g in enumerate(groups) for t in g}
        pairs = [(r["chosen"], r["rejected"]) for r in rows if r["prompt"] == prompt]
        strict = all(len(g) == 1 for g in groups)
        # K(K-1)/2 = 6 for a strict ranking of 4; the tied pair gives none.
        assert len(pairs) == (6 if strict else 5) and len(set(pairs)) == len(pairs)
        assert all(place[chosen] < place[rejected] for chosen, rejected in pairs)


def test_listwise_project_has_no_pairwise_labels_to_export(db, rankings, tmp_path):
    with pytest.raises(InputError, match="no labels to export as trl"):
        export_labels(db, "lw", "trl", tmp_path / "trl.jsonl")
    assert not (tmp_path / "trl.jsonl").exists()


def test_ratings_export(db, tmp_path):
    make_project(db, "pt", mode="pointwise", k=3)
    make_items(db, "pt", 2)
    expected = {}
    for scores in ([5, 1, 3], [2, 2, 4]):
        view = L.next_item(db, "pt", "alice")
        L.submit_ratings(db, view, scores)
        expected.update({(prompt_of(view), r.text): score for r, score in zip(view.responses, scores)})
    out = tmp_path / "ratings.jsonl"
    assert export_labels(db, "pt", "ratings", out).rows == 6
    rows = read_jsonl(out)
    assert all(set(r) == {"prompt", "completion", "rating"} for r in rows)
    assert {(r["prompt"], r["completion"]): r["rating"] for r in rows} == expected
    folder = tmp_path / "ratings-ds"
    export_labels(db, "pt", "ratings", folder, as_datasets=True)
    import datasets

    assert datasets.load_from_disk(str(folder)).num_rows == 6


def test_imported_pairs_and_human_labels_export_together(db, tmp_path):
    make_project(db, "mix")
    make_items(db, "mix", 1)
    L.submit_pairwise(db, shown(L.next_item(db, "mix", "alice"), [0, 1]), "b")
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "imported q", "chosen": "yes", "rejected": "no"}])
    assert import_file(db, path, "mix").pairs_added == 1
    out = tmp_path / "trl.jsonl"
    export_labels(db, "mix", "trl", out)
    assert read_jsonl(out) == [{"prompt": "q0", "chosen": "answer 0.1", "rejected": "answer 0.0"},
                               {"prompt": "imported q", "chosen": "yes", "rejected": "no"}]
    with transaction(db) as s:
        assert s.scalar(select(func.count()).select_from(Item)) == 1  # imported pairs are not work items
        sources = sorted(label.source.value for label in s.scalars(select(PairwiseLabel)))
        assert sources == ["human", "import"]
