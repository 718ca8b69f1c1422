"""Import into and export out of a project: one user action, one transaction each.

An import is all-or-nothing: the file is read and checked completely before anything is written,
and any bad record refuses the whole file with every bad line listed.
"""
from __future__ import annotations

from pathlib import Path

from annotation.services.projects import ProjectSettings, find_project
from storage.db import Database, transaction
from storage.errors import InputError
from storage.exporting import EXPORT_FORMATS, ExportResult, export_project
from storage.importing import ImportResult, import_records
from storage.models import Mode, Project

__all__ = ["EXPORT_FORMATS", "ExportResult", "ImportResult", "export_labels", "import_file"]


def import_file(db: Database, path: str | Path, project_name: str, fmt: str | None = None,
                create: bool = False, skip_invalid: bool = False) -> ImportResult:
    path = Path(path)
    if not path.exists():
        raise InputError(f"no such file or folder: {path}")
    with transaction(db) as s:
        if create and s.query(Project.id).filter_by(name=project_name).first() is None:
            settings = ProjectSettings(name=project_name).validate()
            s.add(Project(name=settings.name, mode=Mode.pairwise, k=2))
            s.flush()
        project = find_project(s, project_name)
        return import_records(s, project, path, fmt, skip_invalid=skip_invalid)


def export_labels(db: Database, project_name: str, fmt: str, out: str | Path,
                  as_datasets: bool = False) -> ExportResult:
    with transaction(db) as s:
        project = find_project(s, project_name)
        return export_project(s, project, fmt, out, as_datasets=as_datasets)
