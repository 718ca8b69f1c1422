"""This process's download folder: what the Data tab exports and the Train tab's job outputs are
written to before Gradio serves them.

Gradio serves only files under its own or the temporary folder, and copies what it serves into its
cache at once; so a download left here more than DOWNLOAD_MAX_AGE_S is removed the next time one is
written (repeated exports never pile up), and the whole folder at exit.
"""
from __future__ import annotations

import atexit
import shutil
import tempfile
import time
import uuid
from pathlib import Path

DOWNLOAD_MAX_AGE_S = 600  # Gradio has copied a download into its own cache long before this

_downloads: Path | None = None


def download_folder(max_age_s: float = DOWNLOAD_MAX_AGE_S) -> Path:
    """This process's download folder (removed at exit), cleared of downloads older than ``max_age_s``."""
    global _downloads
    if _downloads is None:
        _downloads = Path(tempfile.mkdtemp(prefix="prefstudio-downloads-"))
        atexit.register(shutil.rmtree, _downloads, True)
    for old in _downloads.iterdir():
        if time.time() - old.stat().st_mtime > max_age_s:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
    return _downloads


def new_download_dir(prefix: str) -> Path:
    """A fresh folder for one download (an export and its zip) inside the download folder."""
    folder = download_folder() / f"{prefix}-{uuid.uuid4().hex[:12]}"
    folder.mkdir()
    return folder
