"""The Models tab: trained adapters and reward models with their lineage (project, label snapshot,
config, held-out metrics), and a quick "try it" box for policy adapters."""
from __future__ import annotations

import json
from dataclasses import astuple, dataclass

import gradio as gr

from annotation.services import models
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


def model_table(ctx: UIContext) -> list[list]:
    return [list(astuple(row)) for row in models.list_models(ctx.db)]


def model_choices(ctx: UIContext, current=None):
    rows = models.list_models(ctx.db)
    choices = [(f"{r.id} · {r.name} ({r.kind})", r.id) for r in rows]
    ids = [r.id for r in rows]
    return gr.update(choices=choices, value=current if current in ids else (ids[0] if ids else None))


def build_models_tab(ctx: UIContext) -> ModelsTab:
    table = gr.Dataframe(headers=COLUMNS, value=[], interactive=False, elem_id="models-table")
    refresh = gr.Button("Refresh", elem_id="models-refresh")
    model = gr.Dropdown(label="Model", choices=[], elem_id="models-select")
    lineage = gr.Code(label="Training config (lineage)", language="json", elem_id="models-lineage")
    prompt = gr.Textbox(label="Try it: a prompt", lines=2, elem_id="try-prompt")
    try_button = gr.Button("Generate", elem_id="try-button")
    answer = gr.Textbox(label="Answer", lines=6, interactive=False, elem_id="try-answer")
    tab = ModelsTab(table, refresh, model, lineage, prompt, try_button, answer)

    def show(current):
        return model_table(ctx), model_choices(ctx, current)

    refresh.click(show, model, [table, model])

    def lineage_of(model_id):
        if model_id is None:
            return ""
        return json.dumps(models.model_config(ctx.db, int(model_id)), indent=2)

    model.change(lineage_of, model, lineage)

    def try_it(model_id, text):
        try:
            if model_id is None:
                raise InputError("pick a model first")
            return models.try_model(ctx.db, int(model_id), text)
        except InputError as exc:
            return f"⚠️ {exc}"

    try_button.click(try_it, [model, prompt], answer, api_name="try_model")
    return tab
