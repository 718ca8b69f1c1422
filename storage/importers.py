"""Read prompt and preference files into records, collecting every bad record instead of raising.

Two layers:

* container readers turn a file into numbered rows (dicts): JSONL / JSON (optionally gzipped), CSV,
  Parquet, or a folder written by ``datasets.Dataset.save_to_disk`` (read with pyarrow, so importing
  this module never drags in ``datasets`` and whatever it may import);
* row parsers recognise each row's schema and validate it into a ``PromptRecord`` or ``PairRecord``:

  - prompt-only: ``prompt`` (string, or messages), ``messages`` (a chat ending with a user turn) or ``text``;
  - TRL preference: ``prompt``/``chosen``/``rejected`` as strings (standard) or messages (conversational),
    or only ``chosen``/``rejected`` conversations sharing an implicit prompt;
  - HH-RLHF: only ``chosen``/``rejected`` transcripts "\\n\\nHuman: ...\\n\\nAssistant: ...";
  - listwise: ``prompt`` and ``completions`` (strings, or one assistant message each) with ``ranks``
    (completion i's place, 0 = best, equal = tie) or without (the completions are already best first).

Only regular files and folders are read (a FIFO would block forever, /dev/zero never ends), and a
JSONL line is read at most MAX_LINE_BYTES at a time, so no file can hang or exhaust the reader.

Line numbers are 1-based: the physical line for JSONL, the data row (header excluded) for tables.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import math
import os
import stat
import zlib
from collections.abc import Iterator
from pathlib import Path

from storage.hh import ASSISTANT_TAG, HUMAN_TAG, hh_prompt_dialogue, parse_hh_dialogue
from storage.records import (
    FILE_LEVEL, ROLES, ImportReport, PairRecord, PromptRecord, RankingRecord, RecordError,
    unpaired_surrogate,
)

CONTAINER_FORMATS = ("jsonl", "csv", "parquet", "datasets")
SCHEMA_FORMATS = ("hh", "trl")  # force a row schema; the container is still detected from the file
DEFAULT_MAX_CHARS = 100_000
# A JSONL line holds a few texts of at most DEFAULT_MAX_CHARS each (up to 6 bytes a character once
# JSON-escaped); anything longer is not a record, and reading it whole could exhaust memory.
MAX_LINE_BYTES = 16 << 20
MAX_JSON_FILE_BYTES = 1 << 30  # a .json array is parsed at once: refuse one that would not fit

_GZIP_MAGIC = b"\x1f\x8b"
_PARQUET_MAGIC = b"PAR1"
# Columns that may hold messages; in CSV they arrive JSON-encoded.
_MESSAGE_COLUMNS = ("prompt", "messages", "chosen", "rejected")
_PROMPT_COLUMNS = ("prompt", "messages", "text")  # alternatives for a prompt, in order of preference
_RANKING_COLUMNS = ("completions", "ranks")


class RowError(Exception):
    """Raised inside row parsing; becomes one RecordError for that row."""


# --------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------


def read_import_file(path: str | os.PathLike, format: str | None = None,
                     max_chars: int = DEFAULT_MAX_CHARS) -> ImportReport:
    """Read ``path`` into an ImportReport; bad records end up in ``report.errors``, never raised.

    ``format`` is None (detect), a container (jsonl, csv, parquet, datasets) or a row schema to insist
    on (hh, trl) whose container is detected. Raises only for a missing path or an unknown format name.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(path)
    not_a_file = _not_a_file_or_folder(path)
    if not_a_file:
        return ImportReport(records=[], errors=[RecordError(FILE_LEVEL, not_a_file)], format="unknown")
    container, schema = _resolve_format(path, format)
    report = ImportReport(records=[], errors=[], format=container)
    kind_seen: tuple[str, int] | None = None  # (kind, line) of the first row: a file holds one kind
    schemas: set[str] = set()
    for line, row, problem in _iter_rows(path, container):
        if problem is not None:
            report.errors.append(RecordError(line, problem))
            continue
        kind = _row_kind(row)
        if kind_seen is None:
            kind_seen = (kind, line)
        elif kind != kind_seen[0]:
            report.errors.append(RecordError(line, _mixed_kinds_reason(kind, kind_seen)))
            continue
        try:
            record, row_schema = parse_row(row, line, schema, max_chars)
        except RowError as exc:
            report.errors.append(RecordError(line, str(exc)))
            continue
        report.records.append(record)
        schemas.add(row_schema)
        for column in _ignored_columns(row):
            report.ignored_columns[column] = report.ignored_columns.get(column, 0) + 1
    if kind_seen is None and not report.errors:
        report.errors.append(RecordError(FILE_LEVEL, "the file is empty: it holds no records"))
    report.schemas = sorted(schemas)
    return report


def _not_a_file_or_folder(path: Path) -> str | None:
    """Why ``path`` (followed through symlinks) cannot be read as data, or None for a file or folder."""
    mode = path.stat().st_mode
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
    return f"{path} is {kind}, not a regular file or folder: only files and folders can be imported"


def _resolve_format(path: Path, format: str | None) -> tuple[str, str | None]:
    """(container, forced row schema or None) for an explicit or absent format name."""
    if format is None:
        return detect_container(path), None
    name = format.lower()
    if name in CONTAINER_FORMATS:
        return name, None
    if name in SCHEMA_FORMATS:
        return detect_container(path), name
    raise ValueError(f"unknown import format {format!r}: expected one of "
                     f"{', '.join(CONTAINER_FORMATS + SCHEMA_FORMATS)}")


def detect_container(path: Path) -> str:
    """Container format from the path: a folder is a saved dataset; else extension, then magic bytes."""
    if path.is_dir():
        return "datasets"
    name = path.name.lower().removesuffix(".gz")
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(_PARQUET_MAGIC):
        return "parquet"
    if head.startswith(_GZIP_MAGIC) or head.lstrip()[:1] in (b"{", b"["):
        return "jsonl"
    return "csv"


def _row_kind(row: dict) -> str:
    if "chosen" in row or "rejected" in row:
        return "pair"
    return "ranking" if any(c in row for c in _RANKING_COLUMNS) else "prompt"


def _mixed_kinds_reason(kind: str, first: tuple[str, int]) -> str:
    names = {"pair": "a preference pair", "prompt": "a prompt", "ranking": "a ranking"}
    return (f"this row is {names[kind]} but line {first[1]} is {names[first[0]]}; "
            "a file must hold only prompts, only preference pairs or only rankings")


# --------------------------------------------------------------------------------------------------
# Container readers: yield (line, row, None) or (line, None, reason)
# --------------------------------------------------------------------------------------------------

Row = tuple[int, "dict | None", "str | None"]


def _iter_rows(path: Path, container: str) -> Iterator[Row]:
    readers = {"jsonl": _iter_json, "csv": _iter_csv, "parquet": _iter_parquet, "datasets": _iter_datasets}
    try:
        yield from readers[container](path)
    except (zlib.error, gzip.BadGzipFile, EOFError) as exc:  # bad bytes, a wrong checksum, cut short
        yield FILE_LEVEL, None, f"the gzip-compressed data is damaged ({exc})"
    except RecursionError:
        yield FILE_LEVEL, None, "the data is nested too deeply to read"
    except (OSError, EOFError, ValueError, KeyError, csv.Error) as exc:
        # Damaged containers (truncated gzip, corrupt parquet...) fail as a whole, not per record.
        yield FILE_LEVEL, None, f"cannot read the file as {container}: {exc}"


def _open_binary(path: Path):
    with open(path, "rb") as f:
        gzipped = f.read(2) == _GZIP_MAGIC
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def _iter_json(path: Path) -> Iterator[Row]:
    """JSON Lines; a ``.json`` file whose content is one array of objects is read as that array."""
    is_json = path.name.lower().removesuffix(".gz").endswith(".json")
    with _open_binary(path) as f:
        data = f.read(MAX_JSON_FILE_BYTES + 1) if is_json else None
    if data is not None and len(data) > MAX_JSON_FILE_BYTES:
        raise ValueError(f"a .json file is read whole, and this one is over {MAX_JSON_FILE_BYTES >> 20} MiB: "
                         "write it as JSON Lines (.jsonl), one record per line")
    if data is not None and data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"[":
        yield from _iter_json_array(data)
        return
    with _open_binary(path) as f:
        yield from _iter_json_lines(f)


def _iter_json_lines(f) -> Iterator[Row]:
    # Decode line by line so one bad line is reported by number and the others still parse.
    for line, raw in enumerate(_bounded_lines(f), 1):
        if raw is None:
            yield line, None, f"the line is longer than {MAX_LINE_BYTES >> 20} MiB: not a record"
            continue
        if line == 1:
            raw = raw.removeprefix(b"\xef\xbb\xbf")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield line, None, _utf8_reason(exc)
            continue
        if not text.strip():
            continue
        yield (line, *_json_object(text))


def _bounded_lines(f, limit: int = MAX_LINE_BYTES) -> Iterator[bytes | None]:
    """The lines of a binary file; None stands for a line over ``limit`` bytes, skipped unread."""
    while True:
        raw = f.readline(limit + 1)
        if not raw:
            return
        if len(raw) <= limit or raw.endswith(b"\n"):
            yield raw
            continue
        while raw and not raw.endswith(b"\n"):  # skip the rest of the over-long line, a chunk at a time
            raw = f.readline(limit)
        yield None


def _iter_json_array(data: bytes) -> Iterator[Row]:
    """A JSON array: the item number (1-based) stands in for the line number."""
    try:
        items = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        yield data[:exc.start].count(b"\n") + 1, None, _utf8_reason(exc)
        return
    except json.JSONDecodeError as exc:
        yield exc.lineno, None, f"malformed JSON: {exc.msg} (column {exc.colno})"
        return
    except RecursionError:
        yield FILE_LEVEL, None, _TOO_DEEP
        return
    if not isinstance(items, list):
        yield FILE_LEVEL, None, f"expected a JSON array of objects, got {_type_name(items)}"
        return
    for item_number, item in enumerate(items, 1):
        if isinstance(item, dict):
            yield item_number, item, None
        else:
            yield item_number, None, f"expected a JSON object, got {_type_name(item)}"


_TOO_DEEP = "nested too deeply (lists or objects inside one another more than a few hundred levels)"


def _json_object(text: str) -> tuple[dict | None, str | None]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"malformed JSON: {exc.msg} (column {exc.colno})"
    except RecursionError:
        return None, _TOO_DEEP
    if not isinstance(value, dict):
        return None, f"expected a JSON object, got {_type_name(value)}"
    return value, None


def _utf8_reason(exc: UnicodeDecodeError) -> str:
    return f"not valid UTF-8 (byte 0x{exc.object[exc.start]:02x} at byte {exc.start + 1} of the line)"


def _iter_csv(path: Path) -> Iterator[Row]:
    """CSV with a header row; every cell is a string, message columns may hold JSON message lists."""
    with _open_binary(path) as f:
        raw = f.read().removeprefix(b"\xef\xbb\xbf")
    # surrogateescape keeps undecodable bytes as lone surrogates, so a bad row is found and reported
    # while the rest of the file still parses.
    text = raw.decode("utf-8", errors="surrogateescape")
    # The default field limit (128 KiB) is below what max_chars allows; raise it (process-wide, harmless).
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if not header:
        return
    row_number = 0
    for cells in reader:
        if not cells:  # blank line
            continue
        row_number += 1
        yield (row_number, *_csv_row(header, cells))


def _csv_row(header: list[str], cells: list[str]) -> tuple[dict | None, str | None]:
    if len(cells) != len(header):
        return None, f"row has {len(cells)} fields but the header has {len(header)}"
    if any(_has_surrogates(c) for c in cells):
        return None, "not valid UTF-8"
    row = dict(zip(header, cells))
    for column in _MESSAGE_COLUMNS:
        if column in row:
            row[column] = _maybe_json_messages(row[column], always=(column == "messages"))
    return row, None


def _has_surrogates(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _maybe_json_messages(cell: str, always: bool):
    """Decode a JSON message list from a CSV cell; other text stays text ("[INST] ..." is a prompt)."""
    if not cell.lstrip().startswith("["):
        return cell
    try:
        value = json.loads(cell)
    except (json.JSONDecodeError, RecursionError):
        return cell
    if always or (isinstance(value, list) and value and all(isinstance(m, dict) for m in value)):
        return value
    return cell


def _iter_parquet(path: Path) -> Iterator[Row]:
    import pyarrow.parquet as pq

    batches = pq.ParquetFile(path).iter_batches(batch_size=1024)
    yield from _number_rows(batch.to_pylist() for batch in batches)


def _iter_datasets(path: Path) -> Iterator[Row]:
    """A ``save_to_disk`` folder, read as its Arrow shards; row numbers run on across shards."""
    def batches():
        for shard in _dataset_shards(path):
            for batch in _read_arrow_shard(shard).to_batches(max_chunksize=1024):
                yield batch.to_pylist()

    yield from _number_rows(batches())


def _read_arrow_shard(shard: Path):
    import pyarrow as pa

    with pa.OSFile(str(shard)) as source:
        try:  # datasets writes IPC streams; accept the IPC file format too
            return pa.ipc.open_stream(source).read_all()
        except pa.ArrowInvalid:
            source.seek(0)
            return pa.ipc.open_file(source).read_all()


def _dataset_shards(path: Path) -> list[Path]:
    """The Arrow shards of a ``save_to_disk`` folder, each checked to lie inside that folder.

    ``state.json`` and ``dataset_dict.json`` are data from the uploader: a file name there such as
    ``/etc/passwd`` or ``../../secrets.arrow`` (or a symlink pointing out) would import a file of the
    server's, so every name is resolved and must stay inside the folder being imported.
    """
    root = path.resolve()
    splits_file = path / "dataset_dict.json"
    if splits_file.exists():
        splits = json.loads(_inside(root, splits_file, "dataset_dict.json").read_text())["splits"]
        if len(splits) != 1:
            raise ValueError(f"the folder holds a DatasetDict with splits {', '.join(map(str, splits))}; "
                             "import one split folder (e.g. .../train)")
        path = _inside(root, path / _listed_name(splits[0], "dataset_dict.json"), "dataset_dict.json")
    state = path / "state.json"
    if state.exists():
        files = json.loads(_inside(root, state, "state.json").read_text())["_data_files"]
        return [_regular_shard(root, path / _listed_name(f["filename"], "state.json")) for f in files]
    shards = sorted(path.glob("*.arrow"))
    if not shards:
        raise ValueError("not a folder written by datasets.save_to_disk (no state.json, no .arrow files)")
    return [_regular_shard(root, shard) for shard in shards]


def _listed_name(name, listed_in: str) -> str:
    """A file or folder name as ``datasets`` writes it: a plain relative name, never an absolute path."""
    if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
        raise ValueError(f"{listed_in} names {name!r}, which is not a file of this dataset folder: "
                         "only names inside the folder are read")
    return name


def _inside(root: Path, path: Path, listed_in: str) -> Path:
    """``path`` with its symlinks resolved, if it stays inside ``root``; else ValueError."""
    resolved = path.resolve()
    if not resolved.is_relative_to(root):
        raise ValueError(f"{listed_in} leads to {path.name!r}, which points outside the dataset folder: "
                         "only files inside the folder are read")
    return resolved


def _regular_shard(root: Path, shard: Path) -> Path:
    resolved = _inside(root, shard, "state.json")
    if not resolved.is_file():
        raise ValueError(f"shard {shard.name!r} is not a regular file of the dataset folder")
    return resolved


def _number_rows(batches) -> Iterator[Row]:
    number = 0
    for batch in batches:
        for row in batch:
            number += 1
            yield number, row, None


# --------------------------------------------------------------------------------------------------
# Row parsers: one row -> (record, schema name), or RowError with the reason
# --------------------------------------------------------------------------------------------------

_KNOWN_COLUMNS = frozenset(_PROMPT_COLUMNS + ("chosen", "rejected") + _RANKING_COLUMNS)


def parse_row(row: dict, line: int, schema: str | None = None,
              max_chars: int = DEFAULT_MAX_CHARS) -> tuple[PromptRecord | PairRecord | RankingRecord, str]:
    """Recognise the row's schema and validate it; ``schema`` ('hh' or 'trl') insists on one."""
    meta = _meta(row)
    kind = _row_kind(row)
    if kind == "pair":
        return _parse_pair(row, line, schema, max_chars, meta)
    if kind == "ranking":
        if schema is not None:
            raise RowError(f"format {schema!r} expects preference pairs, but the row is a ranking "
                           f"(columns: {_columns(row)})")
        return _parse_ranking(row, line, max_chars, meta), "listwise"
    if schema is not None:
        raise RowError(f"format {schema!r} expects preference pairs, but the row has no 'chosen' "
                       f"and 'rejected' columns (columns: {_columns(row)})")
    messages, is_chat = _prompt_only(row, max_chars)
    return PromptRecord(line, messages, is_chat, meta), "prompt"


def _meta(row: dict) -> dict:
    """Keep the row's other scalar columns (ids, sources, scores); nested values are usually another
    rendering of the same data and would only bloat the database."""
    # "__index_level_0__" and the like are pandas bookkeeping, not data.
    meta = {k: v for k, v in row.items()
            if k not in _KNOWN_COLUMNS and not k.startswith("__") and _is_scalar(v)}
    for key, value in meta.items():
        for text in (key, value) if isinstance(value, str) else (key,):
            if unpaired_surrogate(text):
                raise RowError(f"column {_printable(key)!r} {_SURROGATE_REASON}")
    return meta


def _ignored_columns(row: dict) -> list[str]:
    """Columns of a valid row that are not stored: lists and objects beside the known columns."""
    return [k for k, v in row.items()
            if k not in _KNOWN_COLUMNS and not k.startswith("__") and v is not None and not _is_scalar(v)]


_SURROGATE_REASON = ("holds an unpaired UTF-16 surrogate (such as \\ud800), which is not valid Unicode text; "
                     "fix the file's encoding")


def _printable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _is_scalar(value) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, (str, int, bool))


def _columns(row: dict) -> str:
    return ", ".join(repr(k) for k in row) or "none"


def _type_name(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


# -- prompt-only rows ------------------------------------------------------------------------------


def _prompt_only(row: dict, max_chars: int) -> tuple[list[dict], bool]:
    column = next((c for c in _PROMPT_COLUMNS if c in row), None)
    if column is None:
        raise RowError("missing column: a prompt needs 'prompt', 'messages' or 'text', a preference "
                       f"pair needs 'chosen' and 'rejected' (columns: {_columns(row)})")
    if column == "messages":
        return _prompt_messages(row["messages"], "'messages'", max_chars), True
    if column == "text":
        return [_user(_text(row["text"], "'text'", max_chars))], False
    messages, is_chat, _ = _prompt_value(row["prompt"], max_chars)
    return messages, is_chat


def _prompt_value(value, max_chars: int) -> tuple[list[dict], bool, bool]:
    """A 'prompt' cell -> (messages, is_chat, responses_lead_with_space).

    A string shaped like an HH prompt ("...\n\nHuman: ...\n\nAssistant:") is read back into chat
    messages, so that exporting a chat prompt as a string and importing it again keeps it a chat.
    """
    if isinstance(value, list):
        return _prompt_messages(value, "'prompt'", max_chars), True, False
    if not isinstance(value, str):
        raise RowError(f"'prompt' must be a string or a list of messages, got {_type_name(value)}")
    dialogue = hh_prompt_dialogue(value)
    if dialogue is None:
        return [_user(_text(value, "'prompt'", max_chars))], False, False
    messages = _prompt_messages(parse_hh_dialogue(dialogue), "the 'prompt' HH dialogue", max_chars)
    return messages, True, not value.endswith(" ")


def _user(text: str) -> dict:
    return {"role": "user", "content": text}


# -- text and message validation -------------------------------------------------------------------


def _text(value, label: str, max_chars: int | None) -> str:
    if value is None:
        raise RowError(f"{label} is null")
    if not isinstance(value, str):
        raise RowError(f"{label} must be a string, got {_type_name(value)}")
    if not value.strip():
        raise RowError(f"{label} is empty")
    if max_chars is not None and len(value) > max_chars:
        raise RowError(f"{label} is {len(value):,} characters long, over the limit of {max_chars:,}")
    if unpaired_surrogate(value):
        raise RowError(f"{label} {_SURROGATE_REASON}")
    return value


def _messages(value, label: str, max_chars: int) -> list[dict]:
    """Validate a message list and return it reduced to {role, content} dicts."""
    if value is None:
        raise RowError(f"{label} is null")
    if not isinstance(value, list):
        raise RowError(f"{label} must be a list of messages ({{role, content}}), got {_type_name(value)}")
    if not value:
        raise RowError(f"{label} has no messages")
    return [_message(m, f"{label} message {i}", max_chars) for i, m in enumerate(value, 1)]


def _message(item, label: str, max_chars: int) -> dict:
    if not isinstance(item, dict):
        raise RowError(f"{label} must be an object with 'role' and 'content', got {_type_name(item)}")
    for key in ("role", "content"):
        if key not in item:
            raise RowError(f"{label} has no {key!r}")
    role = item["role"]
    if role not in ROLES:
        raise RowError(f"{label} has unknown role {role!r} (expected {', '.join(ROLES)})")
    return {"role": role, "content": _text(item["content"], f"{label} ({role}) content", max_chars)}


def _prompt_messages(value, label: str, max_chars: int) -> list[dict]:
    """Messages fit to prompt a model: a system message only first, and a user turn last."""
    messages = _messages(value, label, max_chars)
    if any(m["role"] == "system" for m in messages[1:]):
        raise RowError(f"{label}: a system message may only come first")
    if messages[-1]["role"] != "user":
        raise RowError(f"{label} must end with a user message, but its last message is {messages[-1]['role']}")
    return messages


# -- preference pairs ------------------------------------------------------------------------------


def _parse_pair(row: dict, line: int, schema: str | None, max_chars: int,
                meta: dict) -> tuple[PairRecord, str]:
    missing = [c for c in ("chosen", "rejected") if c not in row]
    if missing:
        raise RowError(f"missing column {missing[0]!r}: a preference pair needs both 'chosen' and "
                       f"'rejected' (columns: {_columns(row)})")
    if "prompt" in row:
        if schema == "hh":
            raise RowError("format 'hh' expects only 'chosen' and 'rejected' transcripts, "
                           "but the row has a 'prompt' column")
        prompt, is_chat, chosen, rejected = _explicit_prompt_pair(row, max_chars)
        name = "trl"
    else:
        prompt, is_chat, chosen, rejected, name = _implicit_prompt_pair(row, schema, max_chars)
    if chosen.strip() == rejected.strip():
        raise RowError("chosen and rejected are identical")
    return PairRecord(line, prompt, is_chat, chosen, rejected, meta), name


def _explicit_prompt_pair(row: dict, max_chars: int) -> tuple[list[dict], bool, str, str]:
    """TRL with a 'prompt' column: strings throughout (standard) or messages throughout (conversational)."""
    messages, is_chat, lead_space = _prompt_value(row["prompt"], max_chars)
    if isinstance(row["prompt"], list):
        return (messages, True, _assistant_reply(row["chosen"], "'chosen'", max_chars),
                _assistant_reply(row["rejected"], "'rejected'", max_chars))
    chosen = _text(row["chosen"], "'chosen'", max_chars)
    rejected = _text(row["rejected"], "'rejected'", max_chars)
    if lead_space:  # "...\n\nAssistant:" + " reply": the space separates, it is not part of the reply
        chosen, rejected = chosen.removeprefix(" "), rejected.removeprefix(" ")
    return messages, is_chat, chosen, rejected


def _assistant_reply(value, label: str, max_chars: int) -> str:
    messages = _messages(value, label, max_chars)
    if len(messages) != 1 or messages[0]["role"] != "assistant":
        roles = ", ".join(m["role"] for m in messages)
        raise RowError(f"{label} must be a list with one assistant message, got {len(messages)} ({roles})")
    return messages[0]["content"]


def _implicit_prompt_pair(row: dict, schema: str | None,
                          max_chars: int) -> tuple[list[dict], bool, str, str, str]:
    """No 'prompt' column: two HH transcripts, or two conversations sharing everything but the last turn."""
    chosen, rejected = row["chosen"], row["rejected"]
    if isinstance(chosen, list) and isinstance(rejected, list):
        if schema == "hh":
            raise RowError("format 'hh' expects 'chosen' and 'rejected' as transcript strings, got lists")
        return (*_conversation_pair(chosen, rejected, max_chars), "trl")
    if isinstance(chosen, str) and isinstance(rejected, str):
        if schema == "trl":
            raise RowError("missing column 'prompt': TRL standard preference needs 'prompt', 'chosen' and "
                           "'rejected' (for HH-RLHF transcripts use format 'hh')")
        return (*_hh_pair(chosen, rejected, max_chars), "hh")
    for label, value in (("'chosen'", chosen), ("'rejected'", rejected)):
        if value is None:
            raise RowError(f"{label} is null")
    raise RowError("without a 'prompt' column, 'chosen' and 'rejected' must both be HH transcript strings "
                   f"or both lists of messages, got {_type_name(chosen)} and {_type_name(rejected)}")


def _conversation_pair(chosen: list, rejected: list, max_chars: int) -> tuple[list[dict], bool, str, str]:
    conversations = {"'chosen'": _messages(chosen, "'chosen'", max_chars),
                     "'rejected'": _messages(rejected, "'rejected'", max_chars)}
    for label, conversation in conversations.items():
        if conversation[-1]["role"] != "assistant":
            raise RowError(f"{label} must end with an assistant message (the response), "
                           f"but its last message is {conversation[-1]['role']}")
    c, r = conversations.values()
    if c[:-1] != r[:-1]:
        raise RowError("'chosen' and 'rejected' differ before their last assistant message; "
                       "without a 'prompt' column everything before it is the shared prompt")
    prompt = _prompt_messages(c[:-1], "the prompt shared by 'chosen' and 'rejected'", max_chars)
    return prompt, True, c[-1]["content"], r[-1]["content"]


# -- listwise rankings ------------------------------------------------------------------------------


def _parse_ranking(row: dict, line: int, max_chars: int, meta: dict) -> RankingRecord:
    """prompt + completions (+ ranks): a ranking of K >= 2 completions, ties allowed but not all tied."""
    if "completions" not in row:
        raise RowError(f"missing column 'completions': a ranking needs 'prompt' and 'completions' "
                       f"(columns: {_columns(row)})")
    if "prompt" not in row:
        raise RowError(f"missing column 'prompt': a ranking needs 'prompt' and 'completions' "
                       f"(columns: {_columns(row)})")
    prompt, is_chat, lead_space = _prompt_value(row["prompt"], max_chars)
    completions = row["completions"]
    if not isinstance(completions, list):
        raise RowError(f"'completions' must be a list, got {_type_name(completions)}")
    if len(completions) < 2:
        raise RowError(f"'completions' has {len(completions)} item(s): a ranking needs at least 2")
    texts = [_completion(c, f"completion {i}", max_chars) for i, c in enumerate(completions, 1)]
    if lead_space:  # as for pairs: the space after an HH prompt's "Assistant:" is not part of the reply
        texts = [t.removeprefix(" ") for t in texts]
    seen: dict[str, int] = {}
    for i, text in enumerate(texts, 1):
        if text.strip() in seen:
            raise RowError(f"completions {seen[text.strip()]} and {i} are identical")
        seen[text.strip()] = i
    ranks = row.get("ranks")
    groups = [[i] for i in range(len(texts))] if ranks is None else _rank_groups(ranks, len(texts))
    return RankingRecord(line, prompt, is_chat, texts, groups, meta)


def _completion(value, label: str, max_chars: int) -> str:
    if isinstance(value, list):
        return _assistant_reply(value, label, max_chars)
    return _text(value, label, max_chars)


def _rank_groups(ranks, count: int) -> list[list[int]]:
    """``ranks[i]`` is completion i's place (0 = best, equal = tie) -> index groups, best first."""
    if not isinstance(ranks, list):
        raise RowError(f"'ranks' must be a list of whole numbers, got {_type_name(ranks)}")
    if len(ranks) != count:
        raise RowError(f"'ranks' has {len(ranks)} numbers for {count} completions: give one rank per completion")
    for i, rank in enumerate(ranks, 1):
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
            raise RowError(f"rank {i} is {rank!r}: ranks must be whole numbers from 0 (best) up; "
                           "equal ranks are ties")
    by_rank: dict[int, list[int]] = {}
    for index, rank in enumerate(ranks):
        by_rank.setdefault(rank, []).append(index)
    if len(by_rank) < 2:
        raise RowError("every completion has the same rank: a ranking needs at least two different ranks")
    return [by_rank[r] for r in sorted(by_rank)]


# -- HH-RLHF transcripts ---------------------------------------------------------------------------


def _hh_pair(chosen: str, rejected: str, max_chars: int) -> tuple[list[dict], bool, str, str]:
    for label, transcript in (("'chosen'", chosen), ("'rejected'", rejected)):
        _text(transcript, label, None)  # transcripts may be long; the limit applies to each turn
        if ASSISTANT_TAG not in transcript:
            raise RowError(f"{label} is not an HH transcript (no '\\n\\nAssistant:' turn); without a "
                           "'prompt' column, 'chosen' and 'rejected' must be HH transcripts or message lists")
    if chosen == rejected:
        raise RowError("chosen and rejected are identical")
    dialogue, chosen_reply, rejected_reply = split_hh_pair(chosen, rejected)
    prompt = _prompt_messages(parse_hh_dialogue(dialogue), "the dialogue before the last Assistant turn",
                              max_chars)
    chosen_reply = _text(chosen_reply, "the chosen response (last Assistant turn)", max_chars)
    rejected_reply = _text(rejected_reply, "the rejected response (last Assistant turn)", max_chars)
    return prompt, True, chosen_reply, rejected_reply


def split_hh_pair(chosen: str, rejected: str) -> tuple[str, str, str]:
    """(shared dialogue, chosen reply, rejected reply) of two HH transcripts.

    The prompt ends at the last Assistant tag inside the longest common prefix, not at each transcript's
    own last tag: some model replies themselves contain "\n\nAssistant:" (a run-on generation), and
    cutting there would make the two prompts differ. A reply that still contains a Human turn means the
    two dialogues really differ earlier, and the pair is refused.
    """
    common = os.path.commonprefix([chosen, rejected])
    cut = common.rfind(ASSISTANT_TAG)
    if cut < 0:
        raise RowError("'chosen' and 'rejected' share no dialogue ending in an Assistant turn")
    replies = [t[cut + len(ASSISTANT_TAG):].removeprefix(" ") for t in (chosen, rejected)]
    for label, reply in zip(("chosen", "rejected"), replies):
        if HUMAN_TAG in reply:
            raise RowError(f"the {label} transcript continues with a Human turn after the shared dialogue: "
                           "'chosen' and 'rejected' differ before the last Assistant turn")
    return chosen[:cut], replies[0], replies[1]
