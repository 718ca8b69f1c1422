"""The Data tab: how far each project is (a bar), label counts per project, who labelled what
(per-annotator counts, time per label, skip rate) and export downloads."""
from __future__ import annotations

import html
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import gradio as gr

from annotation.services import annotators, data, projects
from annotation.ui.access import Actor, Permission, caller, has, project_choices
from annotation.ui.context import UIContext
from annotation.ui.downloads import new_download_dir
from storage.errors import InputError

COUNT_COLUMNS = ["project", "mode", "prompts", "items ready", "items done", "pairwise labels", "rankings",
                 "ratings", "rewrites"]
ANNOTATOR_COLUMNS = ["project", "annotator", "labels", "median seconds per label", "skips", "skip rate"]


@dataclass
class DataTab:
    bars: gr.HTML
    counts: gr.Dataframe
    annotators: gr.Dataframe
    refresh: gr.Button
    project: gr.Dropdown
    format: gr.Dropdown
    as_datasets: gr.Checkbox
    accepted_only: gr.Checkbox
    export: gr.Button
    file: gr.File
    status: gr.Markdown

    def views(self) -> list:
        return [self.bars, self.counts, self.annotators]


def _progress_bars(counts: list[projects.ProjectCounts]) -> str:
    """One bar per project: items done (all the labels the project asks for) of all its prompts."""
    rows = []
    for c in counts:
        total = max(c.prompts, c.items_ready + c.items_done)
        pct = 100.0 * c.items_done / total if total else 0.0
        rows.append(f'<div class="ps-project-progress" data-project="{html.escape(c.name)}">'
                    f'<div>{html.escape(c.name)}: {c.items_done} of {total} done ({pct:.0f}%)</div>'
                    f'<div class="ps-bar"><div class="ps-bar-fill" style="width: {pct:.1f}%"></div></div></div>')
    return "".join(rows)


def _annotator_rows(ctx: UIContext, names: list[str]) -> list[list]:
    rows = []
    for name in names:
        for a in annotators.annotator_stats(ctx.db, name):
            seconds = "–" if a.median_seconds is None else f"{a.median_seconds:.1f}"
            rows.append([name, a.annotator, a.labels, seconds, a.skips, f"{a.skip_rate:.0%}"])
    return rows


def data_views(ctx: UIContext, tab: DataTab, actor: Actor) -> dict:
    """Everything the tab shows about the projects, fresh from the database: to an annotator, the
    projects they work on and, of the annotators, only themselves."""
    counts = projects.project_counts(ctx.db)
    team = has(actor, Permission.view_team_stats)
    if not team:
        mine = set(project_choices(ctx, actor, [c.name for c in counts]))
        counts = [c for c in counts if c.name in mine]
    rows = [row for row in _annotator_rows(ctx, [c.name for c in counts]) if team or row[1] == actor.name]
    return {tab.bars: _progress_bars(counts), tab.counts: [list(asdict(c).values()) for c in counts],
            tab.annotators: rows}


def stats_views(ctx: UIContext, tab: DataTab, request: gr.Request) -> dict:
    """data_views for the caller, once they may see label statistics."""
    return data_views(ctx, tab, caller(ctx, request, Permission.view_own_stats))


def build_data_tab(ctx: UIContext) -> DataTab:
    bars = gr.HTML("", elem_id="project-progress", js_on_load=None)
    counts = gr.Dataframe(headers=COUNT_COLUMNS, value=[], interactive=False, elem_id="counts")
    annotator_table = gr.Dataframe(headers=ANNOTATOR_COLUMNS, value=[], interactive=False, elem_id="annotator-stats",
                                   label="Annotators (time per label: median time an item was on screen)")
    refresh = gr.Button("Refresh counts", elem_id="refresh-counts")
    with gr.Row():
        project = gr.Dropdown(label="Project", choices=[], elem_id="export-project")
        fmt = gr.Dropdown(list(data.EXPORT_FORMATS), value="trl", label="Format", elem_id="export-format",
                          info="trl: prompt/chosen/rejected; trl-chat: conversational; listwise: ranked completions; "
                               "ratings; sft: rewrites; pairs-from-rankings: rankings expanded into pairs")
        as_datasets = gr.Checkbox(label="datasets folder (zipped)", value=False, elem_id="export-datasets")
        accepted_only = gr.Checkbox(label="accepted labels only (reviewed)", value=False, elem_id="export-accepted")
    export = gr.Button("Export", variant="primary", elem_id="export-button")
    # The data, then its datasheet (label counts, agreement, gold accuracy) as Markdown and JSON.
    file = gr.File(label="Download", interactive=False, file_count="multiple", elem_id="export-file")
    status = gr.Markdown("", elem_id="export-status")
    tab = DataTab(bars, counts, annotator_table, refresh, project, fmt, as_datasets, accepted_only, export, file,
                  status)

    def refresh_views(request: gr.Request):
        return stats_views(ctx, tab, request)

    refresh.click(refresh_views, None, tab.views(), api_name="refresh_counts")

    def do_export(name, fmt, as_datasets, accepted_only, request: gr.Request):
        caller(ctx, request, Permission.import_export)
        try:
            if not name:
                raise InputError("pick a project to export")
            out_dir = new_download_dir("export")  # removed once Gradio has long copied it
            stem = f"{name}-{fmt}".replace("/", "_")
            if as_datasets:  # the datasheet is inside the folder, so inside the zip
                result = data.export_labels(ctx.db, name, fmt, out_dir / stem, as_datasets=True,
                                            accepted_only=accepted_only)
                paths = [shutil.make_archive(str(out_dir / stem), "zip", out_dir, stem)]
            else:
                result = data.export_labels(ctx.db, name, fmt, out_dir / f"{stem}.jsonl", accepted_only=accepted_only)
                paths = [str(result.path), *map(str, result.datasheet)]
        except InputError as exc:
            return {status: f"⚠️ {exc}", file: None}
        return {status: f"✅ {result.rows} rows exported, with their datasheet.", file: paths}

    export.click(do_export, [project, fmt, as_datasets, accepted_only], [status, file], api_name="export_labels")
    return tab
