"""The Data tab: label counts per project and export downloads."""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import gradio as gr

from annotation.services import data, projects
from annotation.ui.context import UIContext
from storage.errors import InputError

COUNT_COLUMNS = ["project", "mode", "prompts", "items ready", "items done", "pairwise labels", "rankings",
                 "ratings", "rewrites"]


@dataclass
class DataTab:
    counts: gr.Dataframe
    refresh: gr.Button
    project: gr.Dropdown
    format: gr.Dropdown
    as_datasets: gr.Checkbox
    export: gr.Button
    file: gr.File
    status: gr.Markdown


def counts_table(ctx: UIContext) -> list[list]:
    return [list(asdict(c).values()) for c in projects.project_counts(ctx.db)]


def build_data_tab(ctx: UIContext) -> DataTab:
    counts = gr.Dataframe(headers=COUNT_COLUMNS, value=[], interactive=False, elem_id="counts")
    refresh = gr.Button("Refresh counts", elem_id="refresh-counts")
    with gr.Row():
        project = gr.Dropdown(label="Project", choices=[], elem_id="export-project")
        fmt = gr.Dropdown(list(data.EXPORT_FORMATS), value="trl", label="Format", elem_id="export-format",
                          info="trl: prompt/chosen/rejected; trl-chat: conversational; listwise: ranked completions; "
                               "ratings; sft: rewrites; pairs-from-rankings: rankings expanded into pairs")
        as_datasets = gr.Checkbox(label="datasets folder (zipped)", value=False, elem_id="export-datasets")
    export = gr.Button("Export", variant="primary", elem_id="export-button")
    file = gr.File(label="Download", interactive=False, elem_id="export-file")
    status = gr.Markdown("", elem_id="export-status")
    tab = DataTab(counts, refresh, project, fmt, as_datasets, export, file, status)

    refresh.click(lambda: counts_table(ctx), None, counts)

    def do_export(name, fmt, as_datasets):
        try:
            if not name:
                raise InputError("pick a project to export")
            out_dir = Path(tempfile.mkdtemp(prefix="prefstudio-export-"))
            stem = f"{name}-{fmt}".replace("/", "_")
            if as_datasets:
                result = data.export_labels(ctx.db, name, fmt, out_dir / stem, as_datasets=True)
                path = shutil.make_archive(str(out_dir / stem), "zip", out_dir, stem)
            else:
                result = data.export_labels(ctx.db, name, fmt, out_dir / f"{stem}.jsonl")
                path = str(result.path)
        except InputError as exc:
            return {status: f"⚠️ {exc}", file: None}
        return {status: f"✅ {result.rows} rows exported.", file: path}

    export.click(do_export, [project, fmt, as_datasets], [status, file], api_name="export_labels")
    return tab
