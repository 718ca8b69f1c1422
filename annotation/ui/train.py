"""The Train tab: launch a job from a form generated from the method's config dataclass, and watch
the queue (live progress, ETA, loss and reward-accuracy plot, log tail, output, cancel, resume).

Methods are the job kinds: training (reward model, DPO, listwise DPO) on a snapshot of a project's
labels, and best-of-N over a project's prompts (a reward model from the trained ones picks the best
of N candidates; the dataset is downloadable from the queue).

Everything shown is read from the database and the job's run folder on every refresh, so a page
reload (or a second browser) re-attaches to running jobs with nothing kept in the page.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd

from alignment.run_folder import ModelKind
from alignment.training.config import DPO_LOSS_TYPES, LR_SCHEDULES
from annotation.jobs.evaluation import SELECTIONS as EVAL_SELECTIONS
from annotation.jobs.kinds import JOB_KINDS
from annotation.jobs.runner import JobRequest, job_rows, log_tail, read_progress
from annotation.services import models, projects
from annotation.ui.context import UIContext
from annotation.ui.forms import build_form, form_values
from storage.errors import InputError
from storage.snapshots import PROMPT_SELECTIONS, SnapshotFilters

# Filled in by the runner (data = the frozen input, out = the run folder, project = the one picked,
# pairs = an evaluation's held-out human pairs) or not for a new job.
RUNNER_FIELDS = ("data", "out", "resume_from", "project", "pairs")
QUEUE_COLUMNS = ["job", "method", "status", "progress", "loss", "ETA", "input", "output"]
CHOICES = {"loss": list(DPO_LOSS_TYPES), "lr_schedule": list(LR_SCHEDULES), "device": ["auto", "cpu", "cuda"],
           "prompts": list(PROMPT_SELECTIONS)}
# Where a kind's field of the same name takes other values.
KIND_CHOICES = {"eval": {"prompts": list(EVAL_SELECTIONS)}}
# Model pickers: filled from the trained models, and a folder can be typed in (e.g. one from the CLI).
MODEL_FIELDS = ("reward", "adapter")
NO_ADAPTER = ("base model (no adapter)", "")


@dataclass
class TrainTab:
    method: gr.Dropdown
    project: gr.Dropdown
    forms: dict[str, dict]
    form_groups: dict[str, gr.Group]
    labels: gr.Accordion
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
    download: gr.Button
    output: gr.File

    @property
    def pickers(self) -> list[gr.Dropdown]:
        """The reward-model and adapter dropdowns of the forms that have them."""
        return [form[name] for form in self.forms.values() for name in MODEL_FIELDS if name in form]


def model_choices(ctx: UIContext) -> dict[str, list[tuple[str, str]]]:
    """Trained reward models and policy adapters as (label, folder) choices for the model pickers."""
    rows = models.list_models(ctx.db)
    pick = lambda kind: [(f"{r.name} (job {r.job})", r.path) for r in rows if r.kind == kind]  # noqa: E731
    return {"reward": pick(ModelKind.REWARD_MODEL), "adapter": [NO_ADAPTER, *pick(ModelKind.POLICY_ADAPTER)]}


def _form_prefix(kind_name: str) -> str:
    # The Best-of-N tab owns the `bon-` element ids (bon-reward, bon-n, ...): the bon job form gets its own.
    return "bon-job-" if kind_name == "bon" else f"{kind_name}-"


def build_train_tab(ctx: UIContext) -> TrainTab:
    with gr.Row():
        method = gr.Dropdown([(k.title, k.name) for k in JOB_KINDS.values()], value="dpo", label="Method",
                             elem_id="train-method")
        project = gr.Dropdown(label="Labels from project", choices=[], elem_id="train-project")
    with gr.Accordion("Which labels (default: all)", open=False) as labels:
        with gr.Row():
            annotators = gr.Textbox(label="Annotators (comma-separated)", elem_id="train-annotators")
            since = gr.Textbox(label="From date (YYYY-MM-DD)", elem_id="train-since")
            until = gr.Textbox(label="To date (YYYY-MM-DD)", elem_id="train-until")
    forms, groups = {}, {}
    choices = {**CHOICES, **model_choices(ctx)}
    for kind in JOB_KINDS.values():
        with gr.Group(visible=kind.name == "dpo") as group:
            with gr.Accordion(f"{kind.title} settings", open=True):
                forms[kind.name] = build_form(kind.config_class, choices={**choices, **KIND_CHOICES.get(kind.name, {})},
                                              exclude=RUNNER_FIELDS,
                                              prefix=_form_prefix(kind.name), custom_values=MODEL_FIELDS,
                                              defaults={"model": ctx.default_model, "adapter": ""})
        groups[kind.name] = group
    launch = gr.Button("Train", variant="primary", elem_id="train-launch")
    status = gr.Markdown("", elem_id="train-status")

    gr.Markdown("### Jobs")
    queue = gr.Dataframe(headers=QUEUE_COLUMNS, value=[], interactive=False, elem_id="job-queue")
    with gr.Row():
        job = gr.Dropdown(label="Job", choices=[], elem_id="job-select")
        cancel = gr.Button("Cancel job", variant="stop", elem_id="job-cancel")
        resume = gr.Button("Resume job", elem_id="job-resume")
        download = gr.Button("Download output", elem_id="job-download")
    output = gr.File(label="Job output", interactive=False, elem_id="job-output")
    bar = gr.HTML("", elem_id="job-progress", js_on_load=None)
    plot = gr.LinePlot(pd.DataFrame({"step": [], "value": [], "series": []}), x="step", y="value", color="series",
                       title="Loss and reward accuracy", elem_id="job-plot")
    log = gr.Textbox(label="Log (tail)", lines=10, max_lines=10, interactive=False, elem_id="job-log")
    tab = TrainTab(method, project, forms, groups, labels, annotators, since, until, launch, status, queue, job, bar,
                   plot, log, cancel, resume, download, output)
    _wire(ctx, tab)
    return tab


def _progress_bar(rows: list[dict], job_id: int | None) -> str:
    row = next((r for r in rows if r["id"] == job_id), None)
    if row is None:
        return ""
    done, total = row["step"] or 0, row["total_steps"] or 0
    pct = 100.0 * done / total if total else (100.0 if row["status"] == "succeeded" else 0.0)
    eta = f" · ETA {row['eta_s']:.0f} s" if row.get("eta_s") and row["status"] == "running" else ""
    unit = row.get("unit") or "step"
    return (f'<div class="ps-job"><div>job {row["id"]} · {row["status"]} · {unit} {done}/{total or "?"}{eta}</div>'
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
        table.append([r["id"], r["kind"], r["status"], progress, loss, eta, _input_text(r), r.get("output") or ""])
    return table


def _input_text(row: dict) -> str:
    if row.get("prompts") is not None:
        return f"{row['prompts']} prompts"
    return f"{row['labels']} labels" if row.get("labels") is not None else ""


def _wire(ctx: UIContext, tab: TrainTab) -> None:
    kinds = list(JOB_KINDS)

    def show_method(method):
        # Training reads labels (with filters); best-of-N reads the project's prompts.
        trains = JOB_KINDS[method].trains
        return {**{tab.form_groups[k]: gr.update(visible=method == k) for k in kinds},
                tab.labels: gr.update(visible=trains),
                tab.project: gr.update(label="Labels from project" if trains else "Prompts from project"),
                tab.launch: gr.update(value="Train" if trains else "Run"),
                **refresh_model_choices(ctx, tab)}

    tab.method.change(show_method, tab.method, [*tab.form_groups.values(), tab.labels, tab.project, tab.launch,
                                                *tab.pickers])
    _wire_adapter_base_model(ctx, tab)

    all_fields = [c for k in kinds for c in tab.forms[k].values()]

    def launch(method, project, annotators, since, until, *values):
        try:
            if ctx.jobs is None:
                raise InputError("this server runs without a job runner")
            if not project:
                raise InputError("pick the project whose labels (or prompts) the job reads")
            offset = 0
            for k in kinds:  # find this method's slice of the form values
                n = len(tab.forms[k])
                if k == method:
                    raw = dict(zip(tab.forms[k].keys(), values[offset:offset + n]))
                    break
                offset += n
            config = form_values(JOB_KINDS[method].config_class, raw)
            filters = None
            if JOB_KINDS[method].trains:  # the (hidden) label filters mean nothing to a best-of-N job
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

    def download(job_id):
        try:
            path = output_file(ctx, job_id)
        except InputError as exc:
            return {tab.status: f"⚠️ {exc}", tab.output: None}
        return {tab.status: f"✅ Output of job {job_id}: {path.name}", tab.output: str(path)}

    tab.download.click(download, tab.job, [tab.status, tab.output], api_name="job_output")


def output_file(ctx: UIContext, job_id) -> Path:
    """A copy of the job's output file (e.g. a best-of-N dataset) in a temporary folder, for download.

    Copied because Gradio serves only files under its own or the temporary folder, and the run folders
    may live anywhere (next to the database by default).
    """
    if job_id is None:
        raise InputError("pick a job first")
    row = next((r for r in job_rows(ctx.db) if r["id"] == int(job_id)), None)
    if row is None:
        raise InputError(f"unknown job {job_id}")
    output = Path(row["output"]) if row.get("output") else None
    if output is None:
        raise InputError(f"job {job_id} is {row['status']}: it has no output yet")
    if not output.is_file():
        raise InputError(f"job {job_id} produced the folder {output} (find it in the Models tab), not a file")
    copy = Path(tempfile.mkdtemp(prefix="prefstudio-job-")) / f"job{row['id']}-{output.name}"
    shutil.copyfile(output, copy)
    return copy


def refresh_model_choices(ctx: UIContext, tab: TrainTab) -> dict:
    """New choices for the reward / adapter pickers (models appear as jobs finish); picks are kept."""
    options = model_choices(ctx)
    return {form[name]: gr.update(choices=options[name])
            for form in tab.forms.values() for name in MODEL_FIELDS if name in form}


def on_select(ctx: UIContext, tab: TrainTab, project: str | None) -> dict:
    """When the tab is opened: fresh project and model lists."""
    return {tab.project: project_choices(ctx, project), **refresh_model_choices(ctx, tab)}


def _wire_adapter_base_model(ctx: UIContext, tab: TrainTab) -> None:
    """Picking a trained adapter fills in the base model it was trained on: any other base would not fit."""
    for form in tab.forms.values():
        if "adapter" not in form or "model" not in form:
            continue

        def base_of(adapter):
            base = next((r.base_model for r in models.list_models(ctx.db) if r.path == adapter), None)
            return gr.update(value=base) if adapter and base else gr.update()

        form["adapter"].change(base_of, form["adapter"], form["model"])


def _job_choices(ctx: UIContext, rows: list[dict] | None = None) -> list[tuple[str, int]]:
    rows = job_rows(ctx.db) if rows is None else rows
    return [(f"{r['id']} · {r['kind']} · {r['status']}", r["id"]) for r in rows]


def project_choices(ctx: UIContext, current: str | None = None):
    names = projects.project_names(ctx.db)
    return gr.update(choices=names, value=current if current in names else (names[0] if names else None))
