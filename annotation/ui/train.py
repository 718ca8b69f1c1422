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
import zipfile
from dataclasses import dataclass
from html import escape
from pathlib import Path

import gradio as gr

from alignment.rl.trainer import latest_round
from alignment.run_folder import CHECKPOINT_PREFIX, REFERENCE_FILE, ModelKind
from alignment.training.config import DPO_LOSS_TYPES, LR_SCHEDULES
from annotation.jobs.evaluation import SELECTIONS as EVAL_SELECTIONS
from annotation.jobs.kinds import JOB_KINDS
from annotation.jobs.runner import CANCELLABLE, RESUMABLE, JobRequest, job_rows, log_tail, read_progress
from annotation.services import catalogue, models, projects
from annotation.ui.access import Permission, caller, check
from annotation.ui.context import UIContext
from annotation.ui.downloads import download_folder
from annotation.ui.forms import build_form, form_values, readable_error
from annotation.ui.job_plot import plot_html
from annotation.ui.rollout_view import rollout_html
from storage.errors import InputError
from storage.snapshots import PROMPT_SELECTIONS, SnapshotFilters

# Filled in by the runner (data = the frozen input, out = the run folder, project = the one picked,
# pairs = an evaluation's held-out human pairs) or not for a new job.
RUNNER_FIELDS = ("data", "out", "resume_from", "project", "pairs")
QUEUE_COLUMNS = ["job", "method", "status", "progress", "loss", "ETA", "input", "output"]
ACTIVE = ("running", "queued")
# Not part of a downloaded model: resumable checkpoints (optimizer state) and the reference-pass cache.
NOT_DOWNLOADED = (f"{CHECKPOINT_PREFIX}*", REFERENCE_FILE)
CHOICES = {"loss": list(DPO_LOSS_TYPES), "lr_schedule": list(LR_SCHEDULES), "device": ["auto", "cpu", "cuda"],
           "prompts": list(PROMPT_SELECTIONS)}
# Where a kind's field of the same name takes other values.
KIND_CHOICES = {"eval": {"prompts": list(EVAL_SELECTIONS)}}
# Model pickers: filled from the trained models, and a folder can be typed in (e.g. one from the CLI).
# PPO and GRPO name theirs reward_model and init_adapter.
MODEL_FIELDS = ("reward", "adapter", "reward_model", "init_adapter")
# The settings people change, shown first; the rest of a method's fields go under "Advanced settings"
# (a field can also ask for this with metadata={"basic": True}).
BASIC_FIELDS = ("model", "reward", "adapter", "epochs", "max_steps", "lr", "beta", "loss", "use_margin", "n",
                "prompts", "max_prompts", "store_as_items", "reward_model", "reward_rule", "init_adapter")
# Online RL's batch counts prompts and K sets the completions per prompt: both shown first there.
KIND_BASIC_FIELDS = {"grpo": ("batch_size", "num_generations"), "ppo": ("batch_size", "num_generations")}
NO_ADAPTER = ("base model (no adapter)", "")
# Online RL: the reward model is optional (rules or a reward function can score instead), and
# without a starting adapter a fresh one trains against the bare base.
NO_REWARD_MODEL = ("none (rules or a reward function score)", "")
FRESH_ADAPTER = ("none: a fresh adapter, the base as reference", "")


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
    accepted_only: gr.Checkbox
    launch: gr.Button
    status: gr.Markdown
    queue: gr.Dataframe
    job: gr.Dropdown
    bar: gr.HTML
    active: gr.HTML
    plot: gr.HTML
    rollouts: gr.HTML
    log: gr.Textbox
    cancel: gr.Button
    resume: gr.Button
    download: gr.Button
    output: gr.File
    # Ticks once a second while active; the page's load starts it for those who may watch jobs.
    poller: gr.Timer | None = None

    @property
    def pickers(self) -> list[gr.Dropdown]:
        """The reward-model and adapter dropdowns of the forms that have them."""
        return [form[name] for form in self.forms.values() for name in MODEL_FIELDS if name in form]


def model_choices(ctx: UIContext) -> dict[str, list[tuple[str, str]]]:
    """(label, folder) choices of each model picker (MODEL_FIELDS): trained reward models and
    policy adapters, and what leaving the picker empty means for that field."""
    rewards = catalogue.reward_options(ctx.db)
    adapters = catalogue.trained_choices(ctx.db, ModelKind.POLICY_ADAPTER)
    return {"reward": rewards, "adapter": [NO_ADAPTER, *adapters],
            "reward_model": [NO_REWARD_MODEL, *rewards], "init_adapter": [FRESH_ADAPTER, *adapters]}


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
        accepted_only = gr.Checkbox(label="Only labels a reviewer accepted (corrected ones with the correction)",
                                    value=False, elem_id="train-accepted-only")
    forms, groups = {}, {}
    choices = {**CHOICES, **model_choices(ctx)}
    for kind in JOB_KINDS.values():
        # Each method keeps its own form (hidden, not rebuilt, when another is picked): values typed
        # for one method are still there when the user comes back to it.
        with gr.Group(visible=kind.name == "dpo", elem_id=f"{_form_prefix(kind.name)}form") as group:
            forms[kind.name] = build_form(kind.config_class, choices={**choices, **KIND_CHOICES.get(kind.name, {})},
                                          exclude=RUNNER_FIELDS,
                                          basic=BASIC_FIELDS + KIND_BASIC_FIELDS.get(kind.name, ()),
                                          prefix=_form_prefix(kind.name), custom_values=MODEL_FIELDS,
                                          defaults={"model": ctx.default_model, "adapter": "", "reward_model": "",
                                                    "init_adapter": ""})
        groups[kind.name] = group
    launch = gr.Button("Train", variant="primary", elem_id="train-launch")
    status = gr.Markdown("", elem_id="train-status")

    gr.Markdown("### Jobs")
    queue = gr.Dataframe(headers=QUEUE_COLUMNS, value=[], interactive=False, elem_id="job-queue")
    with gr.Row():
        # Custom values let scripts (gradio_client) name any job id: the page's choices start empty.
        job = gr.Dropdown(label="Job", choices=[], allow_custom_value=True, elem_id="job-select")
        cancel = gr.Button("Cancel job", variant="stop", elem_id="job-cancel", interactive=False)
        resume = gr.Button("Resume job", elem_id="job-resume", interactive=False)
        download = gr.Button("Download output", elem_id="job-download", interactive=False)
    bar = gr.HTML("", elem_id="job-progress", js_on_load=None)
    active = gr.HTML("", elem_id="jobs-active", js_on_load=None)
    plot = gr.HTML(plot_html([]), elem_id="job-plot", js_on_load=None)
    rollouts = gr.HTML("", elem_id="job-rollouts", js_on_load=None)
    log = gr.Textbox(label="Log (tail)", lines=10, max_lines=10, interactive=False, elem_id="job-log")
    output = gr.File(label="Job output", interactive=False, height=90, elem_id="job-output")
    tab = TrainTab(method, project, forms, groups, labels, annotators, since, until, accepted_only, launch, status,
                   queue, job, bar, active, plot, rollouts, log, cancel, resume, download, output)
    _wire(ctx, tab)
    return tab


def progress_text(row: dict) -> str:
    """Where a job is: the phase before training (with its own count), else its steps (or prompts)."""
    if row["status"] == "queued":
        return "waiting for the device"
    if _in_phase(row):
        count = f" {row['phase_done']}/{row['phase_total']}" if row.get("phase_total") else ""
        return f"{row['phase']}{count}"
    if row["status"] == "running" and row.get("step") is None:
        return "starting"
    return f"{row.get('unit') or 'step'} {row['step'] or 0}/{row['total_steps'] or '?'}"


def _in_phase(row: dict) -> bool:
    """Running, and still in the work before the first step (loading, the reference pass)."""
    return row["status"] == "running" and bool(row.get("phase"))


def _eta(row: dict) -> float | None:
    if row["status"] != "running":
        return None
    return row.get("phase_eta_s") if _in_phase(row) else row.get("eta_s")


def _fraction(row: dict) -> float:
    if row["status"] == "succeeded":
        return 1.0
    if _in_phase(row):
        done, total = row.get("phase_done") or 0, row.get("phase_total") or 0
    else:
        done, total = row.get("step") or 0, row.get("total_steps") or 0
    return done / total if total else 0.0


def _bar(row: dict) -> str:
    eta = f" · ETA {_eta(row):.0f} s" if _eta(row) is not None else ""
    why = f' · <span class="ps-job-reason">{escape(row["reason"])}</span>' if row.get("reason") else ""
    fill = f'<div class="ps-bar-fill" style="width:{100 * _fraction(row):.1f}%"></div>'
    return (f'<div class="ps-job" data-job="{row["id"]}"><div>job {row["id"]} · {row["status"]} · '
            f'{escape(progress_text(row))}{eta}{why}</div><div class="ps-bar">{fill}</div></div>')


def _progress_bar(rows: list[dict], job_id: int | None) -> str:
    row = next((r for r in rows if r["id"] == job_id), None)
    return "" if row is None else _bar(row)


def _active_bars(rows: list[dict], job_id: int | None) -> str:
    """Every other running or queued job, so launching or picking one never hides another's progress."""
    others = [r for r in reversed(rows) if r["status"] in ACTIVE and r["id"] != job_id]
    return "" if not others else "<div>Also in the queue:</div>" + "".join(_bar(r) for r in others)


def default_job(rows: list[dict]) -> int | None:
    """The job a fresh view shows: the one running (the oldest, if several), else the newest."""
    running = [r["id"] for r in rows if r["status"] == "running"]
    return min(running) if running else (rows[0]["id"] if rows else None)


def _queue_table(rows: list[dict]) -> list[list]:
    table = []
    for r in rows:
        loss = f"{r['loss']:.4f}" if isinstance(r.get("loss"), (int, float)) else ""
        eta = f"{_eta(r):.0f} s" if _eta(r) is not None else ""
        status = f"{r['status']}: {_shorten(r['reason'])}" if r.get("reason") else r["status"]
        table.append([r["id"], r["kind"], status, progress_text(r), loss, eta, _input_text(r), r.get("output") or ""])
    return table


#: Longest failure reason the queue table shows; the panel next to the picked job shows it whole.
TABLE_REASON_CHARS = 80


def _shorten(reason: str) -> str:
    """A failure reason cut for the table (a long one used to widen its status column off the page)."""
    return reason if len(reason) <= TABLE_REASON_CHARS else reason[:TABLE_REASON_CHARS - 1].rstrip() + "…"


def _input_text(row: dict) -> str:
    if row.get("prompts") is not None:
        return f"{row['prompts']} prompts"
    return f"{row['labels']} labels" if row.get("labels") is not None else ""


def _wire(ctx: UIContext, tab: TrainTab) -> None:
    kinds = list(JOB_KINDS)

    def show_method(method, request: gr.Request):
        caller(ctx, request, Permission.run_jobs)
        # Training reads labels (with filters); best-of-N reads the project's prompts.
        trains = JOB_KINDS[method].trains
        return {**{tab.form_groups[k]: gr.update(visible=method == k) for k in kinds},
                tab.labels: gr.update(visible=trains),
                tab.project: gr.update(label="Labels from project" if trains else "Prompts from project"),
                tab.launch: gr.update(value="Train" if trains else "Run"),
                **refresh_model_choices(ctx, tab)}

    tab.method.change(show_method, tab.method, [*tab.form_groups.values(), tab.labels, tab.project, tab.launch,
                                                *tab.pickers], api_name="train_method")
    _wire_adapter_base_model(ctx, tab)

    all_fields = [c for k in kinds for c in tab.forms[k].values()]

    def launch(request: gr.Request, watched, method, project, annotators, since, until, accepted_only, *values):
        # The forms name models, adapters and reward models, which may be folders on the server.
        check(ctx, caller(ctx, request, Permission.run_jobs), Permission.use_server_paths)
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
                filters = SnapshotFilters(annotators=names or None, since=since or None, until=until or None,
                                          accepted_only=bool(accepted_only))
            job_id = ctx.jobs.submit(JobRequest(method, project, config, filters))
        except (InputError, ValueError) as exc:
            config_class = JOB_KINDS[method].config_class if method in JOB_KINDS else None
            return {tab.status: f"⚠️ {readable_error(config_class, str(exc)) if config_class else exc}"}
        rows = job_rows(ctx.db)
        # The new job is shown, unless the one being watched is still running: that one stays in view.
        watched = picked_job(watched)
        keep = any(r["id"] == watched and r["status"] == "running" for r in rows)
        note = f" Job {watched} is still running and stays in view; pick job {job_id} to watch it." if keep else ""
        return {tab.status: f"✅ Job {job_id} queued.{note}",
                tab.job: gr.update(choices=_job_choices(ctx, rows), value=watched if keep else job_id)}

    tab.launch.click(launch, [tab.job, tab.method, tab.project, tab.annotators, tab.since, tab.until,
                              tab.accepted_only, *all_fields],
                     [tab.status, tab.job], api_name="launch_job")

    outputs = [tab.queue, tab.job, tab.bar, tab.active, tab.plot, tab.rollouts, tab.log, tab.cancel, tab.resume,
               tab.download]

    def watch(job_id, request: gr.Request):
        caller(ctx, request, Permission.run_jobs)
        return poll(ctx, tab, job_id)

    tab.poller = gr.Timer(1.0, active=False)
    tab.poller.tick(watch, tab.job, outputs, show_progress="hidden", api_name="job_poll")
    tab.job.change(watch, tab.job, outputs, show_progress="hidden", api_name="job_picked")

    def act(action, job_id, request: gr.Request):
        caller(ctx, request, Permission.run_jobs)
        try:
            job_id = parse_job_id(job_id)
            getattr(ctx.jobs, action)(job_id)
        except InputError as exc:
            return f"⚠️ {exc}"
        return f"✅ Job {job_id} {'cancelled' if action == 'cancel' else 'queued again from its last checkpoint'}."

    def cancel(job_id, request: gr.Request):
        return act("cancel", job_id, request)

    def resume(job_id, request: gr.Request):
        return act("resume", job_id, request)

    tab.cancel.click(cancel, tab.job, tab.status, api_name="cancel_job")
    tab.resume.click(resume, tab.job, tab.status, api_name="resume_job")

    def download(job_id, request: gr.Request):
        caller(ctx, request, Permission.run_jobs)
        try:
            path = output_file(ctx, job_id)
        except InputError as exc:
            return {tab.status: f"⚠️ {exc}", tab.output: None}
        return {tab.status: f"✅ Output of job {job_id}: {path.name}", tab.output: str(path)}

    tab.download.click(download, tab.job, [tab.status, tab.output], api_name="job_output")


def parse_job_id(value) -> int:
    """The job id a handler was given (the picker's value, or whatever a script sent), or InputError."""
    if value is None or value == "":
        raise InputError("pick a job first")
    try:
        return int(str(value).split("·")[0].strip())
    except ValueError:
        raise InputError(f"no job {str(value)[:40]!r}: pick one from the list") from None


def picked_job(value) -> int | None:
    """The picked job's id, or None when none (or no valid one) is picked."""
    try:
        return parse_job_id(value)
    except InputError:
        return None


def poll(ctx: UIContext, tab: TrainTab, job_id) -> dict:
    """The queue and the picked job's progress, plot and log, read afresh from the database and its run folder.

    Never sets which job is picked (only a launch, the user, or opening the tab with none picked do):
    a poll answering after one of those would put back the job it was asked about.
    """
    rows = job_rows(ctx.db)
    job_id = picked_job(job_id)
    row = next((r for r in rows if r["id"] == job_id), None)
    run_dir = Path(row["run_dir"]) if row and row.get("run_dir") else None
    return {tab.queue: _queue_table(rows), tab.job: gr.update(choices=_job_choices(ctx, rows)),
            tab.bar: _progress_bar(rows, job_id), tab.active: _active_bars(rows, job_id),
            tab.plot: plot_html(read_progress(run_dir) if run_dir else []),
            tab.rollouts: rollout_html(latest_round(Path(row["out"])) if row and row.get("out") else []),
            tab.log: log_tail(run_dir) if run_dir else "", **action_buttons(tab, row)}


def action_buttons(tab: TrainTab, row: dict | None) -> dict:
    """Cancel, Resume and Download clickable only when the picked job can take that action (the
    runner refuses the rest anyway; a button that looks enabled and then refuses misleads)."""
    status = row["status"] if row else None
    return {tab.cancel: gr.update(interactive=status in {s.value for s in CANCELLABLE}),
            tab.resume: gr.update(interactive=status in {s.value for s in RESUMABLE}),
            tab.download: gr.update(interactive=bool(row and row.get("output")))}


def output_file(ctx: UIContext, job_id) -> Path:
    """The job's output for download: a copy of its file (e.g. a best-of-N dataset), or its model
    folder as a zip (adapter, tokenizer, config and metrics; no checkpoints).

    Written to this process's download folder, because Gradio serves only files under its own or the
    temporary folder and the run folders may live anywhere; Gradio copies what it serves into its
    cache, so files there older than a few minutes are removed.
    """
    job_id = parse_job_id(job_id)
    row = next((r for r in job_rows(ctx.db) if r["id"] == job_id), None)
    if row is None:
        raise InputError(f"unknown job {job_id}")
    output = Path(row["output"]) if row.get("output") else None
    if output is None:
        raise InputError(f"job {job_id} is {row['status']}: it has no output yet")
    folder = download_folder()
    if output.is_dir():
        return zip_folder(output, folder / f"job{row['id']}-{row.get('produces') or 'output'}.zip")
    if not output.is_file():
        raise InputError(f"job {job_id}'s output {output.name} is no longer on the server")
    copy = folder / f"job{row['id']}-{output.name}"
    shutil.copyfile(output, copy)
    return copy


def zip_folder(folder: Path, target: Path) -> Path:
    """``folder`` as a zip whose entries sit under the zip's own name (what unzipping makes)."""
    root = target.stem
    partial = target.with_name(f".{target.name}.partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if path.is_file() and not any(part.match(p) for part in map(Path, relative.parts) for p in NOT_DOWNLOADED):
                archive.write(path, f"{root}/{relative.as_posix()}")
    partial.replace(target)
    return target


def refresh_model_choices(ctx: UIContext, tab: TrainTab) -> dict:
    """New choices for the reward / adapter pickers (models appear as jobs finish); picks are kept."""
    options = model_choices(ctx)
    return {form[name]: gr.update(choices=options[name])
            for form in tab.forms.values() for name in MODEL_FIELDS if name in form}


def on_select(ctx: UIContext, tab: TrainTab, project: str | None, job_id: int | None = None) -> dict:
    """When the tab is opened: fresh project and model lists, and a job in view if none is picked."""
    rows = job_rows(ctx.db)
    pick = {} if job_id is not None else {"value": default_job(rows)}
    job = gr.update(choices=_job_choices(ctx, rows), **pick)
    return {tab.project: project_choices(ctx, project), tab.job: job, **refresh_model_choices(ctx, tab)}


def _wire_adapter_base_model(ctx: UIContext, tab: TrainTab) -> None:
    """Picking a trained adapter fills in the base model it was trained on: any other base would not fit."""
    def base_of(adapter, request: gr.Request):
        caller(ctx, request, Permission.run_jobs)
        base = next((r.base_model for r in models.list_models(ctx.db) if r.path == adapter), None)
        return gr.update(value=base) if adapter and base else gr.update()

    for kind_name, form in tab.forms.items():
        for name, api in (("adapter", "train_adapter_base"), ("init_adapter", "train_init_adapter_base")):
            if name in form and "model" in form:
                form[name].change(base_of, form[name], form["model"], api_name=f"{api}_{kind_name}")


def _job_choices(ctx: UIContext, rows: list[dict] | None = None) -> list[tuple[str, int]]:
    rows = job_rows(ctx.db) if rows is None else rows
    return [(f"{r['id']} · {r['kind']} · {r['status']}", r["id"]) for r in rows]


def project_choices(ctx: UIContext, current: str | None = None):
    names = projects.project_names(ctx.db)
    return gr.update(choices=names, value=current if current in names else (names[0] if names else None))
