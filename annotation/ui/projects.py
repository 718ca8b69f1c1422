"""The Projects tab: create or edit a project (form generated from ProjectSettings), type prompts,
and import a file with a clear report of what was stored or why nothing was.

The settings include what to label next (queue order and its reward model, picked from the trained
reward models) and the LLM judge; the "Judge" panel shows the judge's agreement with the annotators
and judges the items generated before the judge was set, in a background thread with progress.
"""
from __future__ import annotations

from dataclasses import dataclass

from pathlib import Path

import gradio as gr

from annotation.services import catalogue, data, judge, projects, prompts
from annotation.ui.access import Permission, caller, check
from annotation.ui.context import UIContext
from annotation.ui.forms import build_form, fill_form, read_form
from storage.errors import InputError

NEW = "(new project)"
IMPORT_FORMATS = ["auto", "jsonl", "csv", "parquet", "datasets", "hh", "trl"]
QUEUE_ORDERS = ["random", "uncertainty", "disagreement"]
NO_REWARD_MODEL = ("(none)", "")


def reward_model_choices(ctx: UIContext) -> list[tuple[str, str]]:
    """The trained reward models, as the Best-of-N tab lists them; a typed folder is accepted too."""
    return [NO_REWARD_MODEL, *catalogue.reward_options(ctx.db)]


@dataclass
class ProjectsTab:
    project: gr.Dropdown
    form: dict
    create: gr.Button
    save: gr.Button
    prompt_text: gr.Textbox
    add_prompts: gr.Button
    upload: gr.File
    import_format: gr.Dropdown
    import_button: gr.Button
    settings_report: gr.Markdown
    prompts_report: gr.Markdown
    report: gr.Markdown
    judge_report: gr.Markdown
    judge_existing: gr.Button
    judge_poll: gr.Timer

    def refresh_choices(self, ctx: UIContext, selected: str | None = None):
        # Keep what is selected (the "new project" form included): refreshing the list must never
        # swap the form under the user's hands.
        names = projects.project_names(ctx.db)
        return gr.update(choices=[NEW, *names], value=selected if selected in names else NEW)


def build_projects_tab(ctx: UIContext) -> ProjectsTab:
    project = gr.Dropdown(label="Project", choices=[NEW], value=NEW, elem_id="setup-project")
    with gr.Accordion("Settings", open=True):
        form = build_form(projects.ProjectSettings,
                          choices={"mode": ["pairwise", "listwise", "pointwise"], "queue_order": QUEUE_ORDERS,
                                   "queue_reward_model": reward_model_choices(ctx)},
                          custom_values=("queue_reward_model",), multiline=("guidelines",), prefix="setting-",
                          # `serve --model` sets new projects' model
                          defaults={"model": ctx.default_model, "queue_reward_model": ""})
        with gr.Row():
            create = gr.Button("Create project", variant="primary", elem_id="create-project")
            save = gr.Button("Save settings", elem_id="save-project")
        # Each message appears under the button that caused it, where the user is looking.
        settings_report = gr.Markdown("", elem_id="settings-report")
    with gr.Accordion("Add prompts", open=True):
        prompt_text = gr.Textbox(label="Prompts: one per line, or blocks separated by a line with ---", lines=5,
                                 elem_id="prompt-text")
        add_prompts = gr.Button("Add prompts", elem_id="add-prompts")
        prompts_report = gr.Markdown("", elem_id="prompts-report")
        with gr.Row():
            upload = gr.File(label="Import a file (JSONL, CSV, Parquet, HH-RLHF, TRL; zip a datasets folder)",
                             file_types=[".jsonl", ".json", ".gz", ".csv", ".parquet", ".zip"], elem_id="import-file")
            import_format = gr.Dropdown(IMPORT_FORMATS, value="auto", label="Format", elem_id="import-format")
        import_button = gr.Button("Import file", elem_id="import-button")
        report = gr.Markdown("", elem_id="setup-report")
    with gr.Accordion("Judge", open=True):
        judge_report = gr.Markdown("", elem_id="judge-report")
        judge_existing = gr.Button("Judge existing items", elem_id="judge-existing")
        judge_poll = gr.Timer(1.0, active=False)
    tab = ProjectsTab(project, form, create, save, prompt_text, add_prompts, upload, import_format, import_button,
                      settings_report, prompts_report, report, judge_report, judge_existing, judge_poll)
    threads = judge.JudgingThreads(ctx.db)
    _wire(ctx, tab, threads)
    _wire_judge(ctx, tab, threads)
    return tab


def judge_summary(ctx: UIContext, threads: judge.JudgingThreads, name: str | None) -> str:
    """The judge's agreement with the annotators, the judging run in progress and generator warnings."""
    if not name or name == NEW:
        return ""
    try:
        lines = [judge.judge_agreement(ctx.db, name).summary()]
    except InputError:
        return ""
    run = threads.progress(name)
    if run is not None:
        if run.running:
            lines.append(f"⏳ {run.state}: {run.done} / {run.total or '?'} items")
        elif run.state == "failed":
            lines.append(f"⚠️ judging failed: {run.message}")
        else:
            lines.append(f"✅ {run.message}")
    warning = ctx.worker.status.warnings.get(name) if ctx.worker is not None else None
    if warning:
        lines.append(f"⚠️ generator: {warning}")
    return "\n\n".join(lines)


def _wire_judge(ctx: UIContext, tab: ProjectsTab, threads: judge.JudgingThreads) -> None:
    def start(name, request: gr.Request):
        caller(ctx, request, Permission.manage_projects)
        try:
            if not name or name == NEW:
                raise InputError("pick a project first")
            threads.start(name)
        except InputError as exc:
            return {tab.judge_report: f"⚠️ {exc}", tab.judge_poll: gr.Timer(active=False)}
        return {tab.judge_report: judge_summary(ctx, threads, name), tab.judge_poll: gr.Timer(active=True)}

    tab.judge_existing.click(start, tab.project, [tab.judge_report, tab.judge_poll], api_name="judge_existing")

    def poll(name, request: gr.Request):
        caller(ctx, request, Permission.manage_projects)
        run = threads.progress(name) if name and name != NEW else None
        return {tab.judge_report: judge_summary(ctx, threads, name),
                tab.judge_poll: gr.Timer(active=bool(run and run.running))}

    tab.judge_poll.tick(poll, tab.project, [tab.judge_report, tab.judge_poll], show_progress="hidden",
                        api_name="judge_progress")

    def summary(name, request: gr.Request):
        caller(ctx, request, Permission.manage_projects)
        return judge_summary(ctx, threads, name)

    tab.project.change(summary, tab.project, tab.judge_report, api_name="judge_summary")


def _wire(ctx: UIContext, tab: ProjectsTab, threads: judge.JudgingThreads) -> None:
    fields = list(tab.form.values())
    names = list(tab.form.keys())

    reward_index = names.index("queue_reward_model")

    def select(name, request: gr.Request):
        caller(ctx, request, Permission.manage_projects)
        if not name or name == NEW:
            values = fill_form(projects.ProjectSettings(name="", model=ctx.default_model))
        else:
            values = fill_form(projects.get_settings(ctx.db, name))
        # Reward models trained since the page loaded appear in the list.
        values[reward_index] = gr.update(choices=reward_model_choices(ctx), value=values[reward_index] or "")
        return values

    tab.project.change(select, tab.project, fields, api_name="project_settings")

    def settings_from(values) -> projects.ProjectSettings:
        try:
            return read_form(projects.ProjectSettings, dict(zip(names, values)))
        except (TypeError, ValueError) as exc:
            raise InputError(f"invalid setting: {exc}") from None

    def allowed_to_set(request: gr.Request) -> None:
        # The settings name models, a judge and a reward model, which may be folders on the server.
        check(ctx, caller(ctx, request, Permission.manage_projects), Permission.use_server_paths)

    def create(request: gr.Request, *values):
        allowed_to_set(request)
        try:
            settings = projects.create_project(ctx.db, settings_from(values))
        except InputError as exc:
            return {tab.settings_report: f"⚠️ {exc}"}
        ctx.wake_worker()
        return {tab.settings_report: f"✅ Project **{settings.name}** created. Add prompts below; the generator "
                            f"prepares items for annotation in the background.",
                tab.project: tab.refresh_choices(ctx, settings.name)}

    tab.create.click(create, fields, [tab.settings_report, tab.project], api_name="create_project")

    def save(request: gr.Request, *values):
        allowed_to_set(request)
        try:
            settings = projects.update_project(ctx.db, settings_from(values))
        except InputError as exc:
            return {tab.settings_report: f"⚠️ {exc}"}
        ctx.wake_worker()
        return {tab.settings_report: f"✅ Settings of **{settings.name}** saved.",
                tab.judge_report: judge_summary(ctx, threads, settings.name)}

    tab.save.click(save, fields, [tab.settings_report, tab.judge_report], api_name="save_project")

    def add(name, text, request: gr.Request):
        caller(ctx, request, Permission.manage_projects)
        try:
            if not name or name == NEW:
                raise InputError("pick or create a project first")
            added = prompts.add_text_prompts(ctx.db, name, text)
        except InputError as exc:
            return {tab.prompts_report: f"⚠️ {exc}"}
        ctx.wake_worker()
        dup = f" ({added.duplicates} already in the project)" if added.duplicates else ""
        return {tab.prompts_report: f"✅ Added {added.added} prompts to **{name}**{dup}.", tab.prompt_text: ""}

    tab.add_prompts.click(add, [tab.project, tab.prompt_text], [tab.prompts_report, tab.prompt_text],
                          api_name="add_prompts")

    def do_import(name, file, fmt, request: gr.Request):
        caller(ctx, request, Permission.import_export)
        try:
            if not name or name == NEW:
                raise InputError("pick or create a project first")
            if not file:
                raise InputError("choose a file to import first")
            result = data.import_file(ctx.db, file, name, fmt=None if fmt == "auto" else fmt, limits=ctx.limits)
        except InputError as exc:
            # The server's copy of an upload lives in a temporary folder: name the file as the user knows it.
            report = _failure_report(exc)
            return {tab.report: report.replace(str(file), Path(file).name) if file else report}
        ctx.wake_worker()
        return {tab.report: f"✅ {result.summary()}"}

    tab.import_button.click(do_import, [tab.project, tab.upload, tab.import_format], [tab.report],
                            api_name="import_file")


def _failure_report(exc: InputError) -> str:
    lines = str(exc).splitlines()
    if getattr(exc, "file_level", None) is not None:  # the file as a whole: unreadable, empty, a FIFO...
        return f"⚠️ **Nothing was imported**: {exc.file_level.reason}"
    if len(lines) <= 1:
        return f"⚠️ {exc}"
    shown = "\n".join(f"- {line}" for line in lines[:50])
    more = f"\n- … and {len(lines) - 50} more" if len(lines) > 50 else ""
    return f"⚠️ **Nothing was imported**: {len(lines)} bad records.\n\n{shown}{more}"
