"""The file-format layer on real files: every container and row schema, the real HH-RLHF split,
one test per kind of bad input, the row builders and both writers."""
from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from storage.formats import (
    ImportFailed, PairRecord, PromptRecord, RecordError, listwise_row, prompt_text, ranking_to_pairs,
    rating_row, read_import_file, sft_row, trl_chat_pair_row, trl_pair_row, write_rows,
)
from tests.conftest import PROJECT_ROOT

HH_VALID_PAIRS = 2308
HH_EMPTY_CHOSEN_LINES = [87, 517, 926, 1104]


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def only_error(report) -> RecordError:
    assert len(report.errors) == 1, report.errors
    return report.errors[0]


# --------------------------------------------------------------------------------------------------
# Prompt-only schemas
# --------------------------------------------------------------------------------------------------


def test_jsonl_prompt_schemas(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text(
        json.dumps({"prompt": "Write a haiku.", "id": "a1", "tags": ["x"]}) + "\n"
        "\n"  # blank lines are skipped, yet line numbers stay physical
        + json.dumps({"prompt": [{"role": "system", "content": "Be terse."}, user("Hi")]}) + "\n"
        + json.dumps({"messages": [user("Hi"), assistant("Hello!"), user("Name a colour.")]}) + "\n"
        + json.dumps({"text": "Bonjour ☀"}, ensure_ascii=False) + "\n",
        encoding="utf-8",
    )
    report = read_import_file(path)
    assert report.errors == [] and report.format == "jsonl" and report.kind == "prompts"
    assert report.schemas == ["prompt"]
    plain, system_chat, chat, text = report.records
    assert plain == PromptRecord(1, [user("Write a haiku.")], False, {"id": "a1"})  # nested meta dropped
    assert system_chat.line == 3 and system_chat.is_chat and system_chat.messages[0]["role"] == "system"
    assert chat.line == 4 and chat.is_chat and len(chat.messages) == 3
    assert text == PromptRecord(5, [user("Bonjour ☀")], False, {})


def test_csv_prompts_and_json_messages_cell(tmp_path):
    path = tmp_path / "prompts.csv"
    pd.DataFrame({"prompt": ["Plain, with comma\nand newline", "[INST] not json", json.dumps([user("Chat")])],
                  "source": ["s1", "s2", "s3"]}).to_csv(path, index=False)
    report = read_import_file(path)
    assert report.errors == [] and report.format == "csv"
    first, inst, chat = report.records
    assert first.messages == [user("Plain, with comma\nand newline")] and first.meta == {"source": "s1"}
    assert inst.messages == [user("[INST] not json")] and not inst.is_chat
    assert chat.messages == [user("Chat")] and chat.is_chat and chat.line == 3


# --------------------------------------------------------------------------------------------------
# Preference schemas
# --------------------------------------------------------------------------------------------------


def test_trl_standard_jsonl_gz(tmp_path):
    path = tmp_path / "pairs.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(json.dumps({"prompt": "2+2=", "chosen": "4", "rejected": "5", "score": 0.5}) + "\n")
    report = read_import_file(path)
    assert report.errors == [] and report.kind == "pairs" and report.schemas == ["trl"]
    assert report.records == [PairRecord(1, [user("2+2=")], False, "4", "5", {"score": 0.5})]


def test_trl_standard_csv(tmp_path):
    path = tmp_path / "pairs.csv"
    pd.DataFrame({"prompt": ["Capital of France?", "Capital of Italy?"], "chosen": ["Paris", "Rome"],
                  "rejected": ["Lyon", "Milan"]}).to_csv(path, index=False)
    report = read_import_file(path)
    assert report.errors == []
    assert [(r.line, r.prompt, r.chosen, r.rejected) for r in report.records] == [
        (1, [user("Capital of France?")], "Paris", "Lyon"), (2, [user("Capital of Italy?")], "Rome", "Milan")]


def test_trl_conversational_parquet(tmp_path):
    path = tmp_path / "pairs.parquet"
    table = pa.Table.from_pylist([
        {"prompt": [user("Hi")], "chosen": [assistant("Hello!")], "rejected": [assistant("Go away.")]},
        {"prompt": [user("a"), assistant("b"), user("c")], "chosen": [assistant("d")], "rejected": [assistant("e")]},
    ])
    pq.write_table(table, path)
    report = read_import_file(path)
    assert report.errors == [] and report.format == "parquet" and report.schemas == ["trl"]
    first, second = report.records
    assert first == PairRecord(1, [user("Hi")], True, "Hello!", "Go away.", {})
    assert second.line == 2 and len(second.prompt) == 3 and second.chosen == "d"


def test_trl_implicit_prompt_from_datasets_folder(tmp_path):
    import datasets

    folder = tmp_path / "implicit"
    shared = [user("Tell me a joke.")]
    datasets.Dataset.from_list([
        {"chosen": shared + [assistant("Why did the chicken...")], "rejected": shared + [assistant("No.")]},
    ]).save_to_disk(str(folder))
    report = read_import_file(folder)
    assert report.errors == [] and report.format == "datasets"
    assert report.records == [PairRecord(1, shared, True, "Why did the chicken...", "No.", {})]


def test_hh_transcripts(tmp_path):
    dialogue = "\n\nHuman: Hi\n\nAssistant: Hello. Human: is quoted inline here.\n\nHuman: Joke?"
    run_on = " Sure.\n\nAssistant:  And a second, run-on turn."  # the reply itself contains a tag
    path = write_jsonl(tmp_path / "hh.jsonl", [
        {"chosen": dialogue + "\n\nAssistant:" + run_on, "rejected": dialogue + "\n\nAssistant: No."},
    ])
    report = read_import_file(path)
    assert report.errors == [] and report.schemas == ["hh"]
    (pair,) = report.records
    assert pair.is_chat and pair.prompt == [
        user("Hi"), assistant("Hello. Human: is quoted inline here."), user("Joke?")]
    assert pair.chosen == run_on[1:] and pair.rejected == "No."
    assert prompt_text(pair.prompt, True) + " " + pair.chosen == dialogue + "\n\nAssistant:" + run_on


def test_hh_pairs_whose_dialogues_differ_are_refused(tmp_path):
    path = write_jsonl(tmp_path / "hh.jsonl", [
        {"chosen": "\n\nHuman: A\n\nAssistant: x\n\nHuman: B\n\nAssistant: y",
         "rejected": "\n\nHuman: A\n\nAssistant: z\n\nHuman: B\n\nAssistant: w"},
    ])
    error = only_error(read_import_file(path))
    assert error.line == 1 and "differ before the last Assistant turn" in error.reason


def test_forced_schema(tmp_path):
    hh = write_jsonl(tmp_path / "hh.jsonl", [{"chosen": "\n\nHuman: q\n\nAssistant: a",
                                             "rejected": "\n\nHuman: q\n\nAssistant: b"}])
    trl = write_jsonl(tmp_path / "trl.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}])
    assert read_import_file(hh, format="hh").errors == []
    assert "missing column 'prompt'" in only_error(read_import_file(hh, format="trl")).reason
    assert "has a 'prompt' column" in only_error(read_import_file(trl, format="hh")).reason
    assert read_import_file(trl, format="jsonl").records[0].chosen == "a"
    with pytest.raises(ValueError, match="unknown import format"):
        read_import_file(trl, format="xml")


def test_json_array_file(tmp_path):
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps([{"prompt": "p", "chosen": "a", "rejected": "b"}, 3]), encoding="utf-8")
    report = read_import_file(path)
    assert len(report.records) == 1
    assert only_error(report) == RecordError(2, "expected a JSON object, got an integer")


# --------------------------------------------------------------------------------------------------
# The real HH-RLHF harmless-base test split
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hh_report(hh_path):
    return read_import_file(hh_path)


@pytest.fixture(scope="module")
def hh_originals(hh_path):
    with gzip.open(hh_path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_real_hh_counts_and_rejections(hh_report, hh_originals):
    assert len(hh_originals) == HH_VALID_PAIRS + len(HH_EMPTY_CHOSEN_LINES)
    assert len(hh_report.records) == HH_VALID_PAIRS and hh_report.schemas == ["hh"]
    assert [e.line for e in hh_report.errors] == HH_EMPTY_CHOSEN_LINES
    assert all("chosen response (last Assistant turn) is empty" in e.reason for e in hh_report.errors)
    for line in HH_EMPTY_CHOSEN_LINES:  # they really are empty, not misparsed
        assert hh_originals[line - 1]["chosen"].endswith("\n\nAssistant: ")


def test_real_hh_prompts_are_chats_ending_with_user(hh_report):
    for pair in hh_report.records:
        assert pair.is_chat and pair.prompt and pair.prompt[-1]["role"] == "user"
        assert all(m["role"] in ("user", "assistant") and m["content"].strip() for m in pair.prompt)


def test_real_hh_trl_export_matches_transcripts(hh_report, hh_originals):
    run_on = 0
    for pair in hh_report.records:
        original = hh_originals[pair.line - 1]
        row = trl_pair_row(pair.prompt, pair.is_chat, pair.chosen, pair.rejected)
        for side in ("chosen", "rejected"):
            last_turn = original[side].rsplit("\n\nAssistant:", 1)[1].removeprefix(" ")
            if row[side] != last_turn:
                # A reply that itself contains "\n\nAssistant:" is kept whole: it still ends with the
                # last turn text, and cutting it would have made the two prompts differ.
                run_on += 1
                assert "\n\nAssistant:" in row[side] and row[side].endswith(last_turn)
            # Every valid pair reproduces its transcripts exactly.
            assert row["prompt"] + " " + row[side] == original[side]
    assert run_on == 5


# --------------------------------------------------------------------------------------------------
# Bad input: one test each, with the line number and a clear reason
# --------------------------------------------------------------------------------------------------


def test_malformed_json_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "ok"}\n{"prompt": "broken"\n{"prompt": "fine"}\n', encoding="utf-8")
    report = read_import_file(path)
    error = only_error(report)
    assert error.line == 2 and error.reason.startswith("malformed JSON")
    assert [r.line for r in report.records] == [1, 3]


def test_invalid_utf8_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"prompt": "one"}\n{"prompt": "caf\xe9"}\n{"prompt": "three \xe2\x98\x80"}\n')
    report = read_import_file(path)
    error = only_error(report)
    assert error.line == 2 and "not valid UTF-8" in error.reason and "0xe9" in error.reason
    assert [r.messages[0]["content"] for r in report.records] == ["one", "three ☀"]


def test_invalid_utf8_csv_row(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"prompt\nfine\nbad \xff byte\nalso fine\n")
    report = read_import_file(path)
    assert only_error(report) == RecordError(2, "not valid UTF-8")
    assert len(report.records) == 2


def test_missing_column(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "p", "chosen": "a"}])
    error = only_error(read_import_file(path))
    assert error.line == 2 and "missing column 'rejected'" in error.reason


def test_no_usable_column(tmp_path):
    path = write_jsonl(tmp_path / "prompts.jsonl", [{"question": "?"}])
    error = only_error(read_import_file(path))
    assert error.line == 1 and "missing column" in error.reason and "'question'" in error.reason


def test_empty_text(tmp_path):
    path = tmp_path / "pairs.parquet"
    pd.DataFrame({"prompt": ["p", "p"], "chosen": ["a", "  \n"], "rejected": ["b", "c"]}).to_parquet(path)
    assert only_error(read_import_file(path)) == RecordError(2, "'chosen' is empty")


def test_oversized_text(tmp_path):
    path = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "short"}, {"prompt": "x" * 101}])
    error = only_error(read_import_file(path, max_chars=100))
    assert error.line == 2 and error.reason == "'prompt' is 101 characters long, over the limit of 100"


def test_chosen_equals_rejected(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "p", "chosen": "same", "rejected": "same"}])
    assert only_error(read_import_file(path)) == RecordError(1, "chosen and rejected are identical")


def test_unknown_role(tmp_path):
    path = write_jsonl(tmp_path / "prompts.jsonl", [
        {"messages": [user("hi")]}, {"messages": [{"role": "tool", "content": "x"}, user("hi")]}])
    error = only_error(read_import_file(path))
    assert error.line == 2 and "unknown role 'tool'" in error.reason and "message 1" in error.reason


def test_wrong_type(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": 42, "chosen": "a", "rejected": "b"}])
    error = only_error(read_import_file(path))
    assert error.line == 1 and "'prompt' must be a string or a list of messages, got an integer" in error.reason


def test_messages_must_end_with_user(tmp_path):
    path = write_jsonl(tmp_path / "prompts.jsonl", [{"messages": [user("hi"), assistant("hello")]}])
    assert "must end with a user message" in only_error(read_import_file(path)).reason


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n  \n", encoding="utf-8")
    report = read_import_file(path)
    assert report.records == [] and only_error(report).reason.startswith("the file is empty")


def test_mixed_prompts_and_pairs(tmp_path):
    path = write_jsonl(tmp_path / "mixed.jsonl", [{"prompt": "p"}, {"prompt": "p", "chosen": "a", "rejected": "b"}])
    error = only_error(read_import_file(path))
    assert error.line == 2 and "only prompts, only preference pairs or only rankings" in error.reason


def test_import_failed_lists_every_error(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('not json\n{"prompt": ""}\n{"prompt": "ok"}\n', encoding="utf-8")
    report = read_import_file(path)
    with pytest.raises(ImportFailed) as caught:
        report.raise_if_errors()
    assert isinstance(caught.value, ValueError) and len(caught.value.errors) == 2
    lines = str(caught.value).splitlines()
    assert lines[0].startswith("line 1: malformed JSON") and lines[1] == "line 2: 'prompt' is empty"


# --------------------------------------------------------------------------------------------------
# Row builders, ranking, writers
# --------------------------------------------------------------------------------------------------

CHAT = [user("Hi"), assistant("Hello"), user("Joke?")]


def test_prompt_text():
    assert prompt_text([user("plain")], False) == "plain"
    assert prompt_text(CHAT, True) == "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Joke?\n\nAssistant:"
    assert prompt_text([{"role": "system", "content": "Sys"}, user("Q")], True) == "Sys\n\nHuman: Q\n\nAssistant:"


def test_row_builders():
    assert trl_pair_row([user("p")], False, "a", "b") == {"prompt": "p", "chosen": "a", "rejected": "b"}
    assert trl_chat_pair_row(CHAT, True, "a", "b") == {
        "prompt": CHAT, "chosen": [assistant("a")], "rejected": [assistant("b")]}
    assert listwise_row([user("p")], False, ["x", "y", "z"], [0, 1, 1]) == {
        "prompt": "p", "completions": ["x", "y", "z"], "ranks": [0, 1, 1]}
    assert listwise_row(CHAT, True, ["x"], [0])["completions"] == [[assistant("x")]]
    with pytest.raises(ValueError):
        listwise_row([user("p")], False, ["x", "y"], [1, 0])
    assert rating_row([user("p")], False, "x", 4) == {"prompt": "p", "completion": "x", "rating": 4}
    assert sft_row(CHAT, True, "x") == {"prompt": CHAT, "completion": [assistant("x")]}
    assert sft_row([user("p")], False, "x") == {"prompt": "p", "completion": "x"}


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8])
def test_ranking_to_pairs_strict(k):
    pairs = ranking_to_pairs([[i] for i in range(k)])
    assert len(pairs) == k * (k - 1) // 2 and all(better < worse for better, worse in pairs)


def test_ranking_to_pairs_ties():
    assert ranking_to_pairs([["a", "b"], ["c"]]) == [("a", "c"), ("b", "c")]
    assert ranking_to_pairs([["a", "b", "c"]]) == []
    assert len(ranking_to_pairs([["a"], ["b", "c"], ["d"]])) == 5


def test_jsonl_export_round_trip(tmp_path):
    rows = [trl_pair_row(CHAT, True, "Ha ☺", "No"), trl_pair_row([user("p")], False, "a", "b")]
    out = tmp_path / "out" / "pairs.jsonl"
    assert write_rows(rows, out) == 2
    assert "☺" in out.read_text(encoding="utf-8") and len(out.read_text().splitlines()) == 2
    assert list(out.parent.iterdir()) == [out]  # no temp file left behind
    records = read_import_file(out).records
    # An HH-shaped prompt string comes back as the chat it was rendered from.
    assert (records[0].prompt, records[0].is_chat, records[0].chosen) == (CHAT, True, "Ha ☺")
    assert (records[1].prompt, records[1].is_chat) == ([user("p")], False)


def test_datasets_folder_round_trip(tmp_path):
    import datasets

    rows = [trl_chat_pair_row(CHAT, True, "a", "b"), trl_chat_pair_row([user("p")], False, "c", "d")]
    out = tmp_path / "export"
    assert write_rows(rows, out, as_datasets=True) == 2
    assert datasets.load_from_disk(str(out)).to_list() == rows
    write_rows(rows[:1], out, as_datasets=True)  # overwriting an earlier export replaces it
    assert datasets.load_from_disk(str(out)).num_rows == 1
    report = read_import_file(out)
    assert report.errors == [] and report.records == [PairRecord(1, CHAT, True, "a", "b", {})]
    with pytest.raises(ValueError, match="at least one row"):
        write_rows([], tmp_path / "empty", as_datasets=True)


def test_storage_never_imports_ml_stack(tmp_path):
    folder = tmp_path / "ds"
    write_rows([{"prompt": "p"}], folder, as_datasets=True)
    code = ("import sys, storage.formats as f; r = f.read_import_file(sys.argv[1]); assert not r.errors; "
            "bad = [m for m in ('torch', 'transformers', 'gradio', 'datasets') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code, str(folder)], check=True, cwd=PROJECT_ROOT)


@pytest.mark.parametrize("prompt", [
    "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: And you?\n\nAssistant:",
    "Human: no leading blank line\n\nAssistant:",
    "A system note\n\nHuman: with a preamble\n\nAssistant: ",
    "Just a question, no transcript",
])
def test_the_training_loader_reads_an_hh_prompt_as_the_importer_does(prompt):
    """One HH reader (storage.hh): a prompt string becomes the same messages whether it is imported into
    a project or read by the trainer from a TRL file."""
    from alignment.training.data import prompt_to_messages
    from storage.importers import parse_row

    record, _ = parse_row({"prompt": prompt, "chosen": "a", "rejected": "b"}, line=1)
    assert prompt_to_messages(prompt) == record.prompt
