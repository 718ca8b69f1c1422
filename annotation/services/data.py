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
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from annotation.services.projects import ProjectSettings, find_project
from storage import copying
from storage.copying import CopyResult
from storage.db import Database, reading, transaction
from storage.errors import InputError
from storage.exporting import EXPORT_FORMATS, ExportResult, export_project
from storage.importing import ImportResult, import_report, read_checked
from storage.models import Mode, Project

__all__ = ["EXPORT_FORMATS", "ExportResult", "ImportResult", "export_labels", "import_file"]


def import_file(db: Database, path: str | Path, project_name: str, fmt: str | None = None,
                create: bool = False, skip_invalid: bool = False) -> ImportResult:
    """Check the whole file, then store it (in short batches, visible at once at the end)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"no such file or folder: {path}")
    settings = _new_project_settings(project_name) if create else None
    with transaction(db) as s:
        exists = s.scalar(select(Project.id).where(Project.name == project_name)) is not None
        if not exists and not create:
            find_project(s, project_name, create_hint=True)  # raises, listing the projects there are
    try:
        with _unzipped(path) as readable:
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


MAX_UNZIPPED_BYTES = 4 << 30


@contextmanager
def _unzipped(path: Path) -> Iterator[Path]:
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
        members = archive.infolist()
        for member in members:  # refuse paths that would escape the folder
            if member.filename.startswith("/") or ".." in Path(member.filename).parts:
                raise InputError(f"{path}: unsafe path in the zip archive: {member.filename}; nothing was imported")
        if sum(m.file_size for m in members) > MAX_UNZIPPED_BYTES:
            raise InputError(f"{path}: the zip archive unpacks to more than {MAX_UNZIPPED_BYTES >> 30} GiB; "
                             "nothing was imported")
        try:
            archive.extractall(folder)
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise InputError(f"{path}: the zip archive is damaged ({exc}); nothing was imported") from None
        entries = list(Path(folder).iterdir())
        if not entries:
            raise InputError(f"{path}: the zip archive is empty; nothing was imported")
        yield entries[0] if len(entries) == 1 else Path(folder)


def _new_project_settings(name: str) -> ProjectSettings:
    return ProjectSettings(name=name).validate()


def _created_mode(report) -> dict:
    """A project made by --create: listwise with the file's K for rankings, else pairwise."""
    if report.kind == "rankings":
        k = max(len(r.completions) for r in report.records)
        return {"mode": Mode.listwise, "k": min(max(k, 3), 8)}
    return {"mode": Mode.pairwise, "k": 2}


def export_labels(db: Database, project_name: str, fmt: str, out: str | Path,
                  as_datasets: bool = False) -> ExportResult:
    with reading(db) as s:
        project = find_project(s, project_name)
        return export_project(s, project, fmt, out, as_datasets=as_datasets)


def copy_database(source: str, target: str) -> CopyResult:
    """`app.py db copy`: every row of one database into another, empty one, in one transaction there."""
    return copying.copy_database(source, target)
