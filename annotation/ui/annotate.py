"""The Annotate tab: one item at a time, in the project's mode (pairwise, listwise or pointwise).

The item on screen lives in per-session `gr.State` as an `ItemView` (what was shown, in which order,
with which client token), so the label stored is exactly what the annotator saw. Every handler
returns a dict of component updates built by `_show`, so all modes render through one function.
Keyboard: 1-4 pick A / B / tie / both bad, Enter submits, S skips, U undoes (see ui/app.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from annotation.render import markdown_to_safe_html, render_messages, render_response
from annotation.services import labelling
from annotation.services.labelling import ItemView
from annotation.services.projects import get_settings
from annotation.ui.context import UIContext
from storage.errors import InputError

MAX_CARDS = 8
CHOICES = [("A is better", "a"), ("B is better", "b"), ("Tie", "tie"), ("Both bad", "both_bad")]
STRENGTHS = [("slightly", 1), ("clearly", 2), ("much", 3)]


@dataclass
class AnnotateTab:
    annotator: gr.Textbox
    project: gr.Dropdown
    view: gr.State
    guidelines: gr.HTML
    progress: gr.Markdown
    status: gr.Markdown
    prompt: gr.HTML
    pair_panel: gr.Column
    resp_a: gr.HTML
    resp_b: gr.HTML
    choice: gr.Radio
    strength: gr.Radio
    rewrite: gr.Textbox
    list_panel: gr.Column
    cards: list[gr.HTML]
    card_boxes: list[gr.Group]
    ranks: list[gr.Number]
    ratings: list[gr.Radio]
    rationale: gr.Textbox
    actions: gr.Row
    submit: gr.Button
    skip: gr.Button
    undo: gr.Button

    def item_outputs(self) -> list:
        return [self.view, self.guidelines, self.prompt, self.pair_panel, self.resp_a, self.resp_b, self.choice,
                self.strength, self.rewrite, self.list_panel, *self.cards, *self.card_boxes, *self.ranks,
                *self.ratings, self.rationale, self.actions, self.status, self.progress]


def build_annotate_tab(ctx: UIContext) -> AnnotateTab:
    with gr.Row():
        annotator = gr.Textbox(label="Your name", placeholder="annotator name", elem_id="annotator", scale=1)
        project = gr.Dropdown(label="Project", choices=[], elem_id="annotate-project", scale=1)
        progress = gr.Markdown("", elem_id="progress")
    view = gr.State(None)
    guidelines = gr.HTML("", elem_id="guidelines", js_on_load=None)
    status = gr.Markdown("Enter your name and pick a project to start.", elem_id="status")
    prompt = gr.HTML("", elem_id="prompt", js_on_load=None)

    with gr.Column(visible=False) as pair_panel:
        with gr.Row(equal_height=False):
            resp_a = gr.HTML("", elem_id="resp-a", js_on_load=None)
            resp_b = gr.HTML("", elem_id="resp-b", js_on_load=None)
        choice = gr.Radio(choices=CHOICES, label="Which is better? (keys 1-4, Enter to submit)", elem_id="choice")
        strength = gr.Radio(choices=STRENGTHS, label="How much better? (optional)", elem_id="strength")
        rewrite = gr.Textbox(label="Both bad: write a better answer (optional, saved as SFT data)", lines=4,
                             visible=False, elem_id="rewrite")

    cards, card_boxes, ranks, ratings = [], [], [], []
    with gr.Column(visible=False) as list_panel:
        for i in range(MAX_CARDS):
            with gr.Group(visible=False, elem_id=f"card-{i}") as box:
                cards.append(gr.HTML("", elem_id=f"card-text-{i}", js_on_load=None))
                ranks.append(gr.Number(label="Rank (1 = best; equal numbers = tie)", precision=0, minimum=1,
                                       maximum=MAX_CARDS, value=None, elem_id=f"rank-{i}"))
                ratings.append(gr.Radio(choices=[1, 2, 3, 4, 5], label="Rating (1 = poor, 5 = excellent)",
                                        elem_id=f"rating-{i}"))
            card_boxes.append(box)

    rationale = gr.Textbox(label="Rationale (optional)", lines=2, elem_id="rationale")
    with gr.Row(visible=False) as actions:
        submit = gr.Button("Submit (Enter)", variant="primary", elem_id="submit")
        skip = gr.Button("Skip (S)", elem_id="skip")
        undo = gr.Button("Undo last (U)", elem_id="undo")

    tab = AnnotateTab(annotator, project, view, guidelines, progress, status, prompt, pair_panel, resp_a, resp_b,
                      choice, strength, rewrite, list_panel, cards, card_boxes, ranks, ratings, rationale, actions,
                      submit, skip, undo)
    _wire(ctx, tab)
    return tab


def _progress_text(ctx: UIContext, project: str | None, user: str | None) -> str:
    if not project:
        return ""
    try:
        p = labelling.progress(ctx.db, project, user)
    except InputError:
        return ""
    worker = ctx.worker_summary(project)
    return (f"**{p.mine}** labelled by you · **{p.ready}** ready · **{p.done}** done"
            f" · {p.prompts_without_items} prompts waiting for generation{worker}")


def _show(ctx: UIContext, tab: AnnotateTab, view: ItemView | None, project: str | None, user: str | None,
          message: str) -> dict:
    """Updates for every item component: the new item (or the empty state) plus a status line."""
    updates: dict = {tab.view: view, tab.status: message, tab.progress: _progress_text(ctx, project, user),
                     tab.rationale: gr.update(value="")}
    guidelines = ""
    if project:
        try:
            guidelines = get_settings(ctx.db, project).guidelines
        except InputError:
            pass
    updates[tab.guidelines] = markdown_to_safe_html(guidelines) if guidelines else ""
    mode = view.mode if view else None
    updates[tab.prompt] = render_messages(view.prompt_messages, view.is_chat) if view else ""
    updates[tab.actions] = gr.update(visible=view is not None)
    updates[tab.pair_panel] = gr.update(visible=mode == "pairwise")
    updates[tab.list_panel] = gr.update(visible=mode in ("listwise", "pointwise"))
    updates[tab.choice] = gr.update(value=None)
    updates[tab.strength] = gr.update(value=None)
    updates[tab.rewrite] = gr.update(value="", visible=False)
    if mode == "pairwise":
        updates[tab.resp_a] = render_response(view.responses[0].text, "A")
        updates[tab.resp_b] = render_response(view.responses[1].text, "B")
    else:
        updates[tab.resp_a] = updates[tab.resp_b] = ""
    for i in range(MAX_CARDS):
        present = mode in ("listwise", "pointwise") and i < len(view.responses)
        updates[tab.card_boxes[i]] = gr.update(visible=present)
        updates[tab.cards[i]] = render_response(view.responses[i].text, f"Response {i + 1}") if present else ""
        updates[tab.ranks[i]] = gr.update(value=None, visible=present and mode == "listwise")
        updates[tab.ratings[i]] = gr.update(value=None, visible=present and mode == "pointwise")
    return updates


def _load_next(ctx: UIContext, tab: AnnotateTab, project: str | None, user: str | None, done_message: str = "") -> dict:
    user = (user or "").strip()
    if not project or not user:
        return _show(ctx, tab, None, project, user, "Enter your name and pick a project to start.")
    try:
        view = labelling.next_item(ctx.db, project, user)
    except InputError as exc:
        return _show(ctx, tab, None, project, user, f"⚠️ {exc}")
    if view is None:
        ctx.wake_worker()
        message = "No items ready for you right now: the generator is working on more; this page checks again."
        return _show(ctx, tab, None, project, user, " ".join(filter(None, [done_message, message])))
    return _show(ctx, tab, view, project, user, " ".join(filter(None, [done_message, f"Item {view.item_id}."])))


def _wire(ctx: UIContext, tab: AnnotateTab) -> None:
    outputs = tab.item_outputs()

    def start(project, user, view):
        # Keep the item on screen if it still belongs to this project and annotator.
        if view is not None and view.project == project and view.user == (user or "").strip():
            return {tab.progress: _progress_text(ctx, project, user)}
        return _load_next(ctx, tab, project, user)

    tab.project.change(start, [tab.project, tab.annotator, tab.view], outputs)
    tab.annotator.submit(start, [tab.project, tab.annotator, tab.view], outputs)
    tab.annotator.blur(start, [tab.project, tab.annotator, tab.view], outputs)

    def submit(project, user, view, choice, strength, rewrite, rationale, *cards):
        if view is None:
            return _load_next(ctx, tab, project, user)
        ranks, ratings = cards[:MAX_CARDS], cards[MAX_CARDS:]
        n = len(view.responses)
        try:
            if view.mode == "pairwise":
                if not choice:
                    raise InputError("pick A, B, tie or both bad first (keys 1-4)")
                receipt = labelling.submit_pairwise(ctx.db, view, choice, strength=strength or None,
                                                    rationale=rationale, rewrite=rewrite)
                said = dict((v, k) for k, v in CHOICES)[choice]
            elif view.mode == "listwise":
                if any(r is None for r in ranks[:n]):
                    raise InputError("give every response a rank (1 = best; equal numbers = tie)")
                groups = labelling.groups_from_ranks(view, list(ranks[:n]))
                receipt = labelling.submit_ranking(ctx.db, view, groups, rationale=rationale)
                said = "ranking"
            else:
                if any(r is None for r in ratings[:n]):
                    raise InputError("rate every response from 1 to 5")
                receipt = labelling.submit_ratings(ctx.db, view, [int(r) for r in ratings[:n]], rationale=rationale)
                said = "ratings"
        except InputError as exc:
            return {tab.status: f"⚠️ {exc}"}
        note = "already saved" if receipt.duplicate else "saved"
        return _load_next(ctx, tab, project, user, f"✅ {said} {note} (item {receipt.item_id}).")

    submit_inputs = [tab.project, tab.annotator, tab.view, tab.choice, tab.strength, tab.rewrite, tab.rationale,
                     *tab.ranks, *tab.ratings]
    tab.submit.click(submit, submit_inputs, outputs, api_name="submit_label", concurrency_limit=None)

    def skip(project, user, view):
        if view is not None:
            labelling.skip(ctx.db, view)
        return _load_next(ctx, tab, project, user, "Skipped.")

    tab.skip.click(skip, [tab.project, tab.annotator, tab.view], outputs, api_name="skip_item")

    def undo(project, user, view):
        try:
            undone = labelling.undo_last(ctx.db, project, (user or "").strip()) if project and user else None
        except InputError as exc:
            return {tab.status: f"⚠️ {exc}"}
        if undone is None:
            return {tab.status: "Nothing to undo."}
        return _load_next(ctx, tab, project, user, f"↩️ Label on item {undone.item_id} removed: label it again.")

    tab.undo.click(undo, [tab.project, tab.annotator, tab.view], outputs, api_name="undo_last")

    tab.choice.change(lambda c: gr.update(visible=c == "both_bad"), tab.choice, tab.rewrite)

    def poll(project, user, view):
        # While the queue is empty the page polls, and shows a new item as soon as one is generated.
        if view is None and project and (user or "").strip():
            return _load_next(ctx, tab, project, user)
        return {tab.progress: _progress_text(ctx, project, user)}

    gr.Timer(2.0).tick(poll, [tab.project, tab.annotator, tab.view], outputs, show_progress="hidden")
