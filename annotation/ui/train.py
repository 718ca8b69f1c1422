"""The Train tab: launch a job from a form generated from the method's config dataclass, and watch
the queue (live progress, ETA, loss and reward-accuracy plot, log tail, cancel, resume).

Everything shown is read from the database and the job's run folder on every refresh, so a page
reload (or a second browser) re-attaches to running jobs with nothing kept in the page.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd

from alignment.training.config import DPO_LOSS_TYPES, LR_SCHEDULES
from annotation.jobs.kinds import JOB_KINDS
from annotation.jobs.runner import JobRequest, job_rows, log_tail, read_progress
from annotation.services import projects
from annotation.ui.context import UIContext
from annotation.ui.forms import build_form, form_values
from storage.errors import InputError
from storage.snapshots import SnapshotFilters

# Filled in by the runner (data = the label snapshot, out = the run folder) or not for a new job.
RUNNER_FIELDS = ("data", "out", "resume_from")
QUEUE_COLUMNS = ["job", "method", "status", "progress", "loss", "ETA", "labels"]
CHOICES = {"loss": list(DPO_LOSS_TYPES), "lr_schedule": list(LR_SCHEDULES), "device": ["auto", "cpu", "cuda"]}


@dataclass
class TrainTab:
    method: gr.Dropdown
    project: gr.Dropdown
    forms: dict[str, dict]
    form_groups: dict[str, gr.Group]
    annotators: gr.Textbox
    since: gr.Textbox
    until: gr.Textbox
    launch: gr.Button
    status: gr.Markdown
    queue: gr.Dataframe
    job: gr.Dropdown
    bar: gr.HTML
    plot: gr.LinePlot
    log: gr.Textbox
    cancel: gr.Button
    resume: gr.Button


def build_train_tab(ctx: UIContext) -> TrainTab:
    with gr.Row():
        method = gr.Dropdown([(k.title, k.name) for k in JOB_KINDS.values()], value="dpo", label="Method",
                             elem_id="train-method")
        project = gr.Dropdown(label="Labels from project", choices=[], elem_id="train-project")
    with gr.Accordion("Which labels (default: all)", open=False):
        with gr.Row():
            annotators = gr.Textbox(label="Annotators (comma-separated)", elem_id="train-annotators")
            since = gr.Textbox(label="From date (YYYY-MM-DD)", elem_id="train-since")
            until = gr.Textbox(label="To date (YYYY-MM-DD)", elem_id="train-until")
    forms, groups = {}, {}
    for kind in JOB_KINDS.values():
        with gr.Group(visible=kind.name == "dpo") as group:
            with gr.Accordion(f"{kind.title} settings", open=True):
                forms[kind.name] = build_form(kind.config_class, choices=CHOICES, exclude=RUNNER_FIELDS,
                                              prefix=f"{kind.name}-", defaults={"model": ctx.default_model})
        groups[kind.name] = group
    launch = gr.Button("Train", variant="primary", elem_id="train-launch")
    status = gr.Markdown("", elem_id="train-status")

    gr.Markdown("### Jobs")
    queue = gr.Dataframe(headers=QUEUE_COLUMNS, value=[], interactive=False, elem_id="job-queue")
    with gr.Row():
        job = gr.Dropdown(label="Job", choices=[], elem_id="job-select")
        cancel = gr.Button("Cancel job", variant="stop", elem_id="job-cancel")
        resume = gr.Button("Resume job", elem_id="job-resume")
    bar = gr.HTML("", elem_id="job-progress", js_on_load=None)
    plot = gr.LinePlot(pd.DataFrame({"step": [], "value": [], "series": []}), x="step", y="value", color="series",
                       title="Loss and reward accuracy", elem_id="job-plot")
    log = gr.Textbox(label="Log (tail)", lines=10, max_lines=10, interactive=False, elem_id="job-log")
    tab = TrainTab(method, project, forms, groups, annotators, since, until, launch, status, queue, job, bar, plot,
                   log, cancel, resume)
    _wire(ctx, tab)
    return tab


def _progress_bar(rows: list[dict], job_id: int | None) -> str:
    row = next((r for r in rows if r["id"] == job_id), None)
    if row is None:
        return ""
    done, total = row["step"] or 0, row["total_steps"] or 0
    pct = 100.0 * done / total if total else (100.0 if row["status"] == "succeeded" else 0.0)
    eta = f" · ETA {row['eta_s']:.0f} s" if row.get("eta_s") and row["status"] == "running" else ""
    return (f'<div class="ps-job"><div>job {row["id"]} · {row["status"]} · step {done}/{total or "?"}{eta}</div>'
            f'<div class="ps-bar"><div class="ps-bar-fill" style="width:{pct:.1f}%"></div></div></div>')


def _plot_frame(run_dir: Path | None) -> pd.DataFrame:
    points = []
    for event in read_progress(run_dir) if run_dir else []:
        if event.get("event") != "step":
            continue
        if event.get("loss") is not None:
            points.append({"step": event["step"], "value": event["loss"], "series": "loss"})
        accuracy = (event.get("metrics") or {}).get("rewards/accuracies", (event.get("metrics") or {}).get("accuracy"))
        if accuracy is not None:
            points.append({"step": event["step"], "value": accuracy, "series": "reward accuracy"})
    return pd.DataFrame(points or {"step": [], "value": [], "series": []})


def _queue_table(rows: list[dict]) -> list[list]:
    table = []
    for r in rows:
        progress = f"{r['step'] or 0}/{r['total_steps'] or '?'}"
        loss = f"{r['loss']:.4f}" if isinstance(r.get("loss"), (int, float)) else ""
        eta = f"{r['eta_s']:.0f} s" if r.get("eta_s") and r["status"] == "running" else ""
        table.append([r["id"], r["kind"], r["status"], progress, loss, eta, r["labels"]])
    return table


def _wire(ctx: UIContext, tab: TrainTab) -> None:
    kinds = list(JOB_KINDS)

    tab.method.change(lambda m: [gr.update(visible=m == k) for k in kinds], tab.method,
                      [tab.form_groups[k] for k in kinds])

    all_fields = [c for k in kinds for c in tab.forms[k].values()]

    def launch(method, project, annotators, since, until, *values):
        try:
            if ctx.jobs is None:
                raise InputError("this server runs without a job runner")
            if not project:
                raise InputError("pick the project whose labels to train on")
            offset = 0
            for k in kinds:  # find this method's slice of the form values
                n = len(tab.forms[k])
                if k == method:
                    raw = dict(zip(tab.forms[k].keys(), values[offset:offset + n]))
                    break
                offset += n
            config = form_values(JOB_KINDS[method].config_class, raw)
            names = [a.strip() for a in (annotators or "").split(",") if a.strip()]
            filters = SnapshotFilters(annotators=names or None, since=since or None, until=until or None)
            job_id = ctx.jobs.submit(JobRequest(method, project, config, filters))
        except (InputError, ValueError) as exc:
            return {tab.status: f"⚠️ {exc}"}
        return {tab.status: f"✅ Job {job_id} queued.", tab.job: gr.update(choices=_job_choices(ctx), value=job_id)}

    tab.launch.click(launch, [tab.method, tab.project, tab.annotators, tab.since, tab.until, *all_fields],
                     [tab.status, tab.job], api_name="launch_job")

    def refresh(job_id):
        rows = job_rows(ctx.db)
        if job_id is None and rows:
            job_id = rows[0]["id"]
        row = next((r for r in rows if r["id"] == job_id), None)
        run_dir = Path(row["run_dir"]) if row and row.get("run_dir") else None
        tail = log_tail(run_dir) if run_dir else ""
        if row and row.get("error"):
            tail = row["error"]
        return {tab.queue: _queue_table(rows), tab.job: gr.update(choices=_job_choices(ctx, rows), value=job_id),
                tab.bar: _progress_bar(rows, job_id), tab.plot: _plot_frame(run_dir), tab.log: tail}

    outputs = [tab.queue, tab.job, tab.bar, tab.plot, tab.log]
    gr.Timer(1.0).tick(refresh, tab.job, outputs, show_progress="hidden")
    tab.job.change(refresh, tab.job, outputs, show_progress="hidden")

    def act(action, job_id):
        try:
            if job_id is None:
                raise InputError("pick a job first")
            getattr(ctx.jobs, action)(int(job_id))
        except InputError as exc:
            return f"⚠️ {exc}"
        return f"✅ Job {job_id} {'cancelled' if action == 'cancel' else 'queued again from its last checkpoint'}."

    tab.cancel.click(lambda j: act("cancel", j), tab.job, tab.status, api_name="cancel_job")
    tab.resume.click(lambda j: act("resume", j), tab.job, tab.status, api_name="resume_job")


def _job_choices(ctx: UIContext, rows: list[dict] | None = None) -> list[tuple[str, int]]:
    rows = job_rows(ctx.db) if rows is None else rows
    return [(f"{r['id']} · {r['kind']} · {r['status']}", r["id"]) for r in rows]


def project_choices(ctx: UIContext, current: str | None = None):
    names = projects.project_names(ctx.db)
    return gr.update(choices=names, value=current if current in names else (names[0] if names else None))
