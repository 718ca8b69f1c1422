"""Plain records that pass between the file-format layer and the database layer.

A message list is ``list[dict]`` with exactly the keys ``role`` (system | user | assistant) and
``content`` (str). ``is_chat`` says whether a prompt is a conversation (exported as messages or as
an HH transcript) or a plain text prompt (exported as its user text).

Nothing here touches a database or a model: these are the values a reader returns and a writer takes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from storage.errors import InputError

ROLES = ("system", "user", "assistant")

# RecordError.line for problems with the file as a whole (empty, unreadable, unknown format).
FILE_LEVEL = 0


@dataclass
class PromptRecord:
    """A prompt to generate responses for."""

    line: int
    messages: list[dict]
    is_chat: bool
    meta: dict = field(default_factory=dict)


@dataclass
class PairRecord:
    """A labelled preference pair: ``chosen``/``rejected`` are the final assistant response texts."""

    line: int
    prompt: list[dict]
    is_chat: bool
    chosen: str
    rejected: str
    meta: dict = field(default_factory=dict)


@dataclass
class RankingRecord:
    """A labelled ranking: ``groups`` lists indices into ``completions``, best group first; a group of
    more than one index is a tie."""

    line: int
    prompt: list[dict]
    is_chat: bool
    completions: list[str]
    groups: list[list[int]]
    meta: dict = field(default_factory=dict)


_SURROGATE = re.compile("[\ud800-\udfff]")


def unpaired_surrogate(text: str) -> str | None:
    """The first lone UTF-16 surrogate in ``text`` (JSON can spell one as "\\ud800"), else None.

    Such a string is not Unicode text: it cannot be encoded as UTF-8, so storing or exporting it fails.
    """
    found = _SURROGATE.search(text)
    return found.group() if found else None


@dataclass(frozen=True)
class RecordError:
    """One rejected record: ``line`` is 1-based (JSONL: physical line; tables: row), 0 = the whole file."""

    line: int
    reason: str

    def __str__(self) -> str:
        where = "file" if self.line == FILE_LEVEL else f"line {self.line}"
        return f"{where}: {self.reason}"


class ImportFailed(InputError):
    """A file was refused; the message lists every bad record, not only the first."""

    def __init__(self, errors: list[RecordError], file: str | None = None):
        self.errors = list(errors)
        self.file = file
        super().__init__("\n".join(str(e) for e in self.errors))

    @property
    def file_level(self) -> RecordError | None:
        """The error that refused the file as a whole (unreadable, empty...), if that is what happened."""
        return next((e for e in self.errors if e.line == FILE_LEVEL), None)


@dataclass
class ImportReport:
    """What a reader found: the good records, every error, the file format and the row schemas seen.

    ``format`` is the container (jsonl, csv, parquet, datasets); ``schemas`` lists the row schemas of
    the valid records (prompt, trl, hh). A file holds one kind of record: prompts or pairs.
    """

    records: list
    errors: list[RecordError]
    format: str
    schemas: list[str] = field(default_factory=list)
    # Columns that were read but not kept (lists or objects beside the known columns): column -> rows.
    ignored_columns: dict[str, int] = field(default_factory=dict)

    @property
    def kind(self) -> str | None:
        """'prompts', 'pairs', 'rankings', or None when there is no valid record."""
        if not self.records:
            return None
        return {PairRecord: "pairs", RankingRecord: "rankings"}.get(type(self.records[0]), "prompts")

    def raise_if_errors(self) -> None:
        """All-or-nothing imports call this: any error refuses the whole file."""
        if self.errors:
            raise ImportFailed(self.errors)
