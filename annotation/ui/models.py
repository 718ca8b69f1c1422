"""The Models tab: trained adapters and reward models with their lineage (project, label snapshot,
config, held-out metrics), and a quick "try it" box for policy adapters."""
from __future__ import annotations

import json
from dataclasses import dataclass

import gradio as gr

from annotation.services import models
from annotation.ui.access import Permission, caller
from annotation.ui.context import UIContext
from storage.errors import InputError

COLUMNS = ["id", "name", "kind", "base model", "job", "project", "labels", "label filter", "held-out accuracy",
           "path"]


@dataclass
class ModelsTab:
    table: gr.Dataframe
    refresh: gr.Button
    model: gr.Dropdown
    lineage: gr.Code
    prompt: gr.Textbox
    try_button: gr.Button
    answer: gr.Textbox
    evaluations: gr.Dataframe
    eval_plot: gr.BarPlot


def model_table(ctx: UIContext) -> list[list]:
    return [[r.id, r.name, r.kind, r.base_model, r.job, r.project, r.labels, r.filters, r.heldout_text, r.path]
            for r in models.list_models(ctx.db)]


def model_choices(ctx: UIContext, current=None):
    rows = models.list_models(ctx.db)
    choices = [(f"{r.id} · {r.name} ({r.kind})", r.id) for r in rows]
    ids = [r.id for r in rows]
    return gr.update(choices=choices, value=current if current in ids else (ids[0] if ids else None))


def evaluation_views(ctx: UIContext):
    import pandas as pd

    rows = models.list_evaluations(ctx.db)
    points = models.evaluation_points(rows)
    frame = pd.DataFrame(points, columns=["evaluation", "win rate vs base", "model"])
    return models.evaluation_table(rows), frame


def show_models(ctx: UIContext, request: gr.Request, current=None):
    """Everything the tab shows, fresh from the database."""
    caller(ctx, request, Permission.manage_models)
    table, plot = evaluation_views(ctx)
    return model_table(ctx), model_choices(ctx, current), table, plot


def build_models_tab(ctx: UIContext) -> ModelsTab:
    table = gr.Dataframe(headers=COLUMNS, value=[], interactive=False, elem_id="models-table")
    refresh = gr.Button("Refresh", elem_id="models-refresh")
    model = gr.Dropdown(label="Model", choices=[], elem_id="models-select")
    lineage = gr.Code(label="Training config (lineage)", language="json", elem_id="models-lineage")
    prompt = gr.Textbox(label="Try it: a prompt", lines=2, elem_id="try-prompt")
    try_button = gr.Button("Generate", elem_id="try-button")
    answer = gr.Textbox(label="Answer", lines=6, interactive=False, elem_id="try-answer")
    gr.Markdown("### Evaluations (tuned vs base, judged by a reward model; run them from the Train tab: "
                "method Evaluation)")
    evaluations = gr.Dataframe(headers=models.EVALUATION_COLUMNS, value=[], interactive=False,
                               elem_id="evaluations-table")
    eval_plot = gr.BarPlot(value=None, x="evaluation", y="win rate vs base", color="model", y_lim=[0, 1],
                           title="Win rate vs base (reward model)", elem_id="evaluations-plot")
    tab = ModelsTab(table, refresh, model, lineage, prompt, try_button, answer, evaluations, eval_plot)

    def refresh_models(current, request: gr.Request):
        return show_models(ctx, request, current)

    refresh.click(refresh_models, model, [table, model, evaluations, eval_plot], api_name="refresh_models")

    def lineage_of(model_id, request: gr.Request):
        caller(ctx, request, Permission.manage_models)
        if model_id is None:
            return ""
        return json.dumps(models.model_config(ctx.db, int(model_id)), indent=2)

    model.change(lineage_of, model, lineage, api_name="model_lineage")

    def try_it(model_id, text, request: gr.Request):
        caller(ctx, request, Permission.run_inference)
        try:
            if model_id is None:
                raise InputError("pick a model first")
            return models.try_model(ctx.db, int(model_id), text)
        except InputError as exc:
            return f"⚠️ {exc}"

    try_button.click(try_it, [model, prompt], answer, api_name="try_model")
    return tab
