"""The file-format layer, in one import: read prompt/preference files, build and write TRL rows.

Pure functions over files and plain records; no database, no model, no torch (``datasets`` is only
imported lazily when writing a datasets folder). The pieces live in:

* ``storage.records``   – PromptRecord, PairRecord, RecordError, ImportReport, ImportFailed;
* ``storage.importers`` – read_import_file and the schema detection behind it;
* ``storage.exporters`` – prompt_text, the row builders, ranking_to_pairs, write_rows;
* ``storage.hh``        – the HH-RLHF transcript reader and writer (parse_hh_dialogue, render_hh_dialogue).
"""
from storage.exporters import (
    listwise_row, prompt_text, ranking_to_pairs, rating_row, sft_row, trl_chat_pair_row, trl_pair_row, write_rows,
)
from storage.hh import parse_hh_dialogue, render_hh_dialogue
from storage.importers import (
    CONTAINER_FORMATS, DEFAULT_MAX_CHARS, SCHEMA_FORMATS, detect_container, read_import_file, split_hh_pair,
)
from storage.records import (
    ROLES, ImportFailed, ImportReport, PairRecord, PromptRecord, RecordError,
)

__all__ = [
    "CONTAINER_FORMATS", "DEFAULT_MAX_CHARS", "ROLES", "SCHEMA_FORMATS",
    "ImportFailed", "ImportReport", "PairRecord", "PromptRecord", "RecordError",
    "detect_container", "listwise_row", "parse_hh_dialogue", "prompt_text", "ranking_to_pairs",
    "rating_row", "read_import_file", "render_hh_dialogue", "sft_row", "split_hh_pair",
    "trl_chat_pair_row", "trl_pair_row", "write_rows",
]
