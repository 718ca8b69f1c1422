"""Import into and export out of a project: one user action, one transaction each.

An import is all-or-nothing: the file is read and checked completely before anything is written,
and any bad record refuses the whole file with every bad line listed. The records are then written
in short batches, so annotators keep working during a long import (storage.importing).
"""
from __future__ import annotations

import errno
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from annotation.services.datasheet import write_datasheet
from annotation.services.projects import ProjectSettings, find_project
from storage import copying
from storage.copying import CopyResult
from storage.db import Database, reading, transaction
from storage.errors import InputError
from storage.exporting import EXPORT_FORMATS, ExportResult, LabelFilter, export_project
from storage.importing import ImportResult, import_report, read_checked
from storage.models import Mode, Project

__all__ = ["EXPORT_FORMATS", "ExportResult", "ImportResult", "export_labels", "import_file"]


@dataclass(frozen=True)
class UploadLimits:
    """How much a file imported through the web UI may hold (`serve --max-upload-mb / --max-unzipped-mb`).

    The upload cap is also given to Gradio (launch's ``max_file_size``), which refuses a bigger upload
    while it streams in; it is checked again here for any other way a file arrives. A zip is also held
    to ``max_unzipped_bytes``: by its declared sizes before anything is unpacked, and by the bytes
    actually written while unpacking (declared sizes are the uploader's word).
    """

    max_upload_bytes: int | None = 200 << 20
    max_unzipped_bytes: int = 2 << 30
    max_zip_members: int = 10_000
    # Text and Arrow data deflate 3-20x; a ratio far beyond that is a zip bomb, not a dataset. Small
    # archives are exempt (a few MiB of repeated lines may well compress that much, and cost nothing).
    max_zip_ratio: int = 100
    ratio_exempt_bytes: int = 16 << 20

    @classmethod
    def from_megabytes(cls, upload_mb: float | None, unzipped_mb: float | None) -> UploadLimits:
        default = cls()
        return cls(max_upload_bytes=default.max_upload_bytes if upload_mb is None else int(upload_mb * (1 << 20)),
                   max_unzipped_bytes=default.max_unzipped_bytes if unzipped_mb is None
                   else int(unzipped_mb * (1 << 20)))


# The CLI imports files of the server's own user: no upload cap, and the old generous cap on zips.
LOCAL_FILE_LIMITS = UploadLimits(max_upload_bytes=None, max_unzipped_bytes=4 << 30)


def _size(n: int) -> str:
    return f"{n / (1 << 30):g} GiB" if n >= 1 << 30 else f"{n / (1 << 20):g} MiB"


def import_file(db: Database, path: str | Path, project_name: str, fmt: str | None = None,
                create: bool = False, skip_invalid: bool = False,
                limits: UploadLimits = LOCAL_FILE_LIMITS) -> ImportResult:
    """Check the whole file, then store it (in short batches, visible at once at the end)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"no such file or folder: {path}")
    if limits.max_upload_bytes is not None and path.is_file() and path.stat().st_size > limits.max_upload_bytes:
        raise InputError(f"{path}: the file is {_size(path.stat().st_size)}, over this server's upload limit of "
                         f"{_size(limits.max_upload_bytes)}; nothing was imported")
    settings = _new_project_settings(project_name) if create else None
    with transaction(db) as s:
        exists = s.scalar(select(Project.id).where(Project.name == project_name)) is not None
        if not exists and not create:
            find_project(s, project_name, create_hint=True)  # raises, listing the projects there are
    try:
        with _unzipped(path, limits) as readable:
            report = read_checked(readable, fmt, skip_invalid=skip_invalid)
    except ValueError as exc:
        if isinstance(exc, InputError):
            if hasattr(exc, "file"):  # an ImportFailed: name the file the user gave, not an unpacked copy
                exc.file = str(path)
            raise
        raise InputError(f"{path}: {exc}") from None  # an unknown format name
    except OSError as exc:
        raise InputError(f"{path}: cannot read the file: {exc.strerror or exc}") from None

    def target(s) -> Project:
        project = s.scalar(select(Project).where(Project.name == project_name))
        if project is None:  # --create, and nobody created it meanwhile
            project = Project(name=settings.name, **_created_mode(report))
            s.add(project)
            s.flush()
        return project

    try:
        return import_report(db, report, path.name, project_name, target)
    except OperationalError as exc:
        if "disk is full" in str(exc.orig):  # SQLite's word for ENOSPC
            raise OSError(errno.ENOSPC, "No space left on device", db.engine.url.database) from None
        raise


@contextmanager
def _unzipped(path: Path, limits: UploadLimits) -> Iterator[Path]:
    """A .zip (a zipped `datasets` folder or a zipped file) is read from a temporary unpacked copy."""
    if path.suffix.lower() != ".zip" or not path.is_file():
        yield path
        return
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise InputError(f"{path}: not a zip archive (the file ends in .zip but its content is not a zip); "
                         "nothing was imported") from None
    with archive, tempfile.TemporaryDirectory(prefix="prefstudio-import-") as folder:
        members = _checked_members(path, archive, limits)
        try:
            _extract(path, archive, members, Path(folder), limits.max_unzipped_bytes)
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise InputError(f"{path}: the zip archive is damaged ({exc}); nothing was imported") from None
        entries = list(Path(folder).iterdir())
        if not entries:
            raise InputError(f"{path}: the zip archive is empty; nothing was imported")
        yield entries[0] if len(entries) == 1 else Path(folder)


def _checked_members(path: Path, archive: zipfile.ZipFile, limits: UploadLimits) -> list[zipfile.ZipInfo]:
    """The archive's entries, refused before anything is unpacked when there are too many, one would
    land outside the folder, or their declared sizes add up to more than the cap."""
    members = archive.infolist()
    if len(members) > limits.max_zip_members:
        raise InputError(f"{path}: the zip archive holds {len(members)} entries, over the limit of "
                         f"{limits.max_zip_members}; nothing was imported")
    for member in members:  # refuse paths that would escape the folder
        if member.filename.startswith(("/", "\\")) or ".." in Path(member.filename.replace("\\", "/")).parts:
            raise InputError(f"{path}: unsafe path in the zip archive: {member.filename}; nothing was imported")
    declared = sum(m.file_size for m in members)
    if declared > limits.max_unzipped_bytes:
        raise InputError(f"{path}: the zip archive unpacks to {_size(declared)}, over this server's limit of "
                         f"{_size(limits.max_unzipped_bytes)}; nothing was imported")
    packed = sum(m.compress_size for m in members)
    if declared > limits.ratio_exempt_bytes and declared > limits.max_zip_ratio * max(packed, 1):
        raise InputError(f"{path}: the zip archive unpacks to {_size(declared)} from {packed / 1024:.0f} KiB, more "
                         f"than {limits.max_zip_ratio} times its size, as zip bombs do; nothing was imported")
    return members


def _extract(path: Path, archive: zipfile.ZipFile, members: list[zipfile.ZipInfo], folder: Path, cap: int) -> None:
    """Unpack ``members`` into ``folder``, counting the bytes written: a forged header that declares
    less than the data holds is stopped at ``cap`` all the same."""
    written = 0
    for member in members:
        target = folder / member.filename
        if member.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(member) as source, open(target, "wb") as out:
            while chunk := source.read(1 << 20):
                written += len(chunk)
                if written > cap:
                    raise InputError(f"{path}: the zip archive unpacks to more than this server's limit of "
                                     f"{_size(cap)}; nothing was imported")
                out.write(chunk)


def _new_project_settings(name: str) -> ProjectSettings:
    return ProjectSettings(name=name).validate()


def _created_mode(report) -> dict:
    """A project made by --create: listwise with the file's K for rankings, else pairwise."""
    if report.kind == "rankings":
        k = max(len(r.completions) for r in report.records)
        return {"mode": Mode.listwise, "k": min(max(k, 3), 8)}
    return {"mode": Mode.pairwise, "k": 2}


def export_labels(db: Database, project_name: str, fmt: str, out: str | Path,
                  as_datasets: bool = False, accepted_only: bool = False) -> ExportResult:
    """Write the project's labels in `fmt` (only those a reviewer accepted or corrected, with
    `accepted_only`), and the datasheet beside them."""
    with reading(db) as s:
        project = find_project(s, project_name)
        result = export_project(s, project, fmt, out, as_datasets=as_datasets,
                                flt=LabelFilter(accepted_only=accepted_only))
    result.datasheet = write_datasheet(db, result, {"accepted_only": accepted_only})
    return result


def copy_database(source: str, target: str) -> CopyResult:
    """`app.py db copy`: every row of one database into another, empty one, in one transaction there."""
    return copying.copy_database(source, target)
