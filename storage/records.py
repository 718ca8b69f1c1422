"""Plain records that pass between the file-format layer and the database layer.

A message list is ``list[dict]`` with exactly the keys ``role`` (system | user | assistant) and
``content`` (str). ``is_chat`` says whether a prompt is a conversation (exported as messages or as
an HH transcript) or a plain text prompt (exported as its user text).

Nothing here touches a database or a model: these are the values a reader returns and a writer takes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from storage.errors import InputError

ROLES = ("system", "user", "assistant")

# The Anthropic HH-RLHF transcript vocabulary, shared by the HH reader and the HH renderer so that
# a transcript read in and written out again comes back byte for byte.
HUMAN_TAG = "\n\nHuman:"
ASSISTANT_TAG = "\n\nAssistant:"

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

    def __init__(self, errors: list[RecordError]):
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


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

    @property
    def kind(self) -> str | None:
        """'prompts', 'pairs', or None when there is no valid record."""
        if not self.records:
            return None
        return "pairs" if isinstance(self.records[0], PairRecord) else "prompts"

    def raise_if_errors(self) -> None:
        """All-or-nothing imports call this: any error refuses the whole file."""
        if self.errors:
            raise ImportFailed(self.errors)
