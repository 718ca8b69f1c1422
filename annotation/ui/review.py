"""The Review tab: a reviewer works through a project's labels and accepts, rejects or corrects them.

The queue lists the labels with the chosen status (by default those not reviewed yet, leaving out
the reviewer's own); picking one shows the prompt and the responses as the annotator saw them, with
their answer, rationale and time. Every handler checks on the server that the caller may review
the project (annotation.ui.access.caller); the reviewer is the caller, never a name the page sends
(in single-user local mode, the name typed in the Annotate tab).
"""
from __future__ import annotations

import html
from dataclasses import dataclass

import gradio as gr

from annotation.ui.access import Permission, caller
from annotation.render import render_messages, render_response
from annotation.services import projects, review
from annotation.ui.context import UIContext
from storage.errors import InputError

QUEUE_COLUMNS = ["label", "item", "annotator", "answer", "rationale", "seconds", "status", "reviewer", "correction"]
CORRECTION_HELP = {"pairwise": "a, b, tie or both_bad (sides as shown above)",
                   "listwise": "a rank per response as shown, 1 = best, like 2, 1, 3",
                   "pointwise": "a score 1-5 per response as shown, like 4, 2"}


@dataclass
class ReviewTab:
    project: gr.Dropdown
    status_filter: gr.Dropdown
    refresh: gr.Button
    queue: gr.Dataframe
    label: gr.Dropdown
    detail: gr.HTML
    correction: gr.Textbox
    accept: gr.Button
    reject: gr.Button
    correct: gr.Button
    status: gr.Markdown


def _reviewer(ctx: UIContext, request: gr.Request, typed_name: str | None, project: str | None) -> str:
    """The caller's name, once they may review `project` (a refusal is raised as the page's error)."""
    actor = caller(ctx, request, Permission.review, project, typed_name=typed_name)
    if not project:
        raise InputError("pick a project to review")
    if actor.name is None:
        raise InputError("enter your name in the Annotate tab first: reviews are signed")
    return actor.name


def _queue_rows(rows: list[review.ReviewRow]) -> list[list]:
    return [[r.label_id, r.item_id, r.annotator or "(imported)", r.answer, (r.rationale or "")[:120],
             "–" if r.seconds is None else f"{r.seconds:.1f}", r.status, r.reviewer or "", r.correction or ""]
            for r in rows]


def _detail(row: review.ReviewRow | None, mode: str) -> str:
    if row is None:
        return "<p>Pick a label from the queue.</p>"
    names = ["A", "B"] if mode == "pairwise" else [str(n + 1) for n in range(len(row.responses))]
    cards = "".join(render_response(text, f"Response {name}") for name, text in zip(names, row.responses))
    gold = " · gold item" if row.gold else ""
    facts = [f"<b>{html.escape(row.annotator or '(imported)')}</b> answered <b>{html.escape(row.answer)}</b>",
             "time on screen " + ("–" if row.seconds is None else f"{row.seconds:.1f} s"),
             f"status {html.escape(row.status)}{gold}"]
    if row.correction:
        facts.append(f"corrected to <b>{html.escape(row.correction)}</b> by {html.escape(row.reviewer or '')}")
    rationale = (f'<blockquote class="ps-rationale">{html.escape(row.rationale)}</blockquote>'
                 if row.rationale else "<p><i>No rationale given.</i></p>")
    return (f'<div class="ps-review" data-label="{row.label_id}"><p>{" · ".join(facts)}</p>{rationale}'
            f'{render_messages(row.prompt, row.is_chat)}<div class="ps-review-cards">{cards}</div></div>')


def build_review_tab(ctx: UIContext, annotator: gr.Textbox) -> ReviewTab:
    gr.Markdown("Labels waiting for review, oldest first (your own are left out). Accept, reject, or "
                "correct a label: the annotator's answer is kept beside the correction, and training "
                "and exports can keep accepted labels only.")
    with gr.Row():
        # Custom values: a script may name the project; membership is checked on every call.
        project = gr.Dropdown(label="Project", choices=[], allow_custom_value=True, elem_id="review-project")
        status_filter = gr.Dropdown(list(review.REVIEW_FILTERS), value="submitted", label="Show",
                                    elem_id="review-filter")
        refresh = gr.Button("Refresh", elem_id="review-refresh")
    queue = gr.Dataframe(headers=QUEUE_COLUMNS, value=[], interactive=False, elem_id="review-queue")
    # Custom values let scripts (gradio_client) name any label id: the service checks it.
    label = gr.Dropdown(label="Label", choices=[], allow_custom_value=True, elem_id="review-label")
    detail = gr.HTML(_detail(None, "pairwise"), elem_id="review-detail")
    correction = gr.Textbox(label="Correction", elem_id="review-correction", info=CORRECTION_HELP["pairwise"])
    with gr.Row():
        accept = gr.Button("Accept", variant="primary", elem_id="review-accept")
        reject = gr.Button("Reject", variant="stop", elem_id="review-reject")
        correct = gr.Button("Correct", elem_id="review-correct")
    status = gr.Markdown("", elem_id="review-status")
    tab = ReviewTab(project, status_filter, refresh, queue, label, detail, correction, accept, reject, correct, status)

    def view(typed_name, name, shown, picked, request: gr.Request, message: str = "") -> dict:
        """The queue of `name` with status `shown`, and the picked label (or the first) in detail."""
        try:
            reviewer = _reviewer(ctx, request, typed_name, name)
            rows = review.review_queue(ctx.db, name, shown, reviewer=reviewer)
            mode = projects.get_settings(ctx.db, name).mode
        except InputError as exc:
            return {queue: [], label: gr.update(choices=[], value=None), detail: _detail(None, "pairwise"),
                    status: f"⚠️ {exc}"}
        ids = [r.label_id for r in rows]
        current = picked if picked in ids else (ids[0] if ids else None)
        row = next((r for r in rows if r.label_id == current), None)
        shown_detail = _detail(row, mode) if rows else f"<p>No {html.escape(shown)} labels to show in this project.</p>"
        return {queue: _queue_rows(rows), label: gr.update(choices=ids, value=current), detail: shown_detail,
                correction: gr.update(info=CORRECTION_HELP[mode]), status: message}

    def show(typed_name, name, shown, picked, request: gr.Request):
        return view(typed_name, name, shown, picked, request)

    # The typed name is an input because single-user local mode signs reviews with it; with
    # accounts, actor_of ignores it and takes the session's user.
    inputs = [annotator, project, status_filter, label]
    views = [queue, label, detail, correction, status]
    for event, api_name in ((project.change, "review_project"), (status_filter.change, "review_filter"),
                            (refresh.click, "review_refresh"), (label.input, "review_pick")):
        event(show, inputs, views, show_progress="hidden", api_name=api_name)

    def decide(verdict: str):
        def handler(typed_name, name, shown, picked, answer, request: gr.Request):
            try:
                reviewer = _reviewer(ctx, request, typed_name, name)
                if picked is None:
                    raise InputError("pick a label to review")
                if verdict == "accept":
                    row = review.accept(ctx.db, name, picked, reviewer)
                elif verdict == "reject":
                    row = review.reject(ctx.db, name, picked, reviewer)
                else:
                    row = review.correct(ctx.db, name, picked, reviewer, answer)
            except InputError as exc:
                return {status: f"⚠️ {exc}"}
            done = f"✅ Label {row.label_id} {row.status}" + (f" to {row.correction}." if row.correction else ".")
            return {**view(typed_name, name, shown, None, request, done), correction: gr.update(value="")}
        handler.__name__ = f"review_{verdict}"
        return handler

    for button, verdict in ((accept, "accept"), (reject, "reject"), (correct, "correct")):
        button.click(decide(verdict), [*inputs, correction], views, api_name=f"review_{verdict}")
    return tab

