"""The Annotate tab: one item at a time, in the project's mode (pairwise, listwise or pointwise).

The item on screen lives in per-session `gr.State` as an `ItemView` (what was shown, in which order,
with which client token), so the label stored is exactly what the annotator saw. Every handler
returns a dict of component updates built by `_show`, so all modes render through one function.
Keyboard (see ui/app.py, `?` shows the list): 1-4 pick A / B / tie / both bad, 1-5 rate the next
unrated card, Enter submits (also from a rank box), S skips, U undoes.

Latency matters here (an annotator submits hundreds of labels): each event declares only the
components it needs, because Gradio pays per declared input and output on every call. Pairwise
and list modes therefore have their own submit button and event, the 32 card components stay out
of the pairwise path, and the "waiting for items" poller is a timer that is active only while
the queue is empty.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr

from annotation.render import markdown_to_safe_html, render_messages, render_response
from annotation.services import judge, labelling
from annotation.services.labelling import ItemView
from annotation.services.projects import get_settings
from annotation.ui.access import Permission, caller, check
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
    progress: gr.HTML
    status: gr.HTML
    prompt: gr.HTML
    pair_panel: gr.Column
    resp_a: gr.HTML
    resp_b: gr.HTML
    suggestion: gr.HTML
    choice: gr.Radio
    strength: gr.Radio
    rewrite: gr.Textbox
    list_panel: gr.Column
    cards: list[gr.HTML]
    card_boxes: list[gr.Group]
    ranks: list[gr.Number]
    ratings: list[gr.Radio]
    rationale: gr.Textbox
    notice: gr.HTML
    actions: gr.Row
    pair_submit: gr.Button
    list_submit: gr.Button
    skip: gr.Button
    undo: gr.Button
    waiting: gr.Timer
    start: Callable | None = None  # (project, name, view) -> updates: what opening the tab shows
    # The id of the item the page shows, sent back with a submit: a submit answers that item only, so
    # parallel submits from one session cannot run on into the items served after it.
    shown_item: gr.Textbox | None = None

    def common_outputs(self) -> list:
        return [self.view, self.guidelines, self.status, self.progress, self.prompt, self.pair_panel,
                self.list_panel, self.actions, self.skip, self.rationale, self.notice, self.pair_submit,
                self.list_submit, self.waiting, self.shown_item]

    def pair_outputs(self) -> list:
        return [self.resp_a, self.resp_b, self.suggestion, self.choice, self.strength, self.rewrite]

    def card_outputs(self) -> list:
        return [*self.cards, *self.card_boxes, *self.ranks, *self.ratings]

    def all_outputs(self) -> list:
        return self.common_outputs() + self.pair_outputs() + self.card_outputs()


def build_annotate_tab(ctx: UIContext) -> AnnotateTab:
    with gr.Row():
        annotator = gr.Textbox(label="Your name", placeholder="annotator name", elem_id="annotator", scale=1)
        project = gr.Dropdown(label="Project", choices=[], elem_id="annotate-project", scale=1)
        progress = gr.HTML("", elem_id="progress", js_on_load=None)
    view = gr.State(None)
    shown_item = gr.Textbox("", visible=False, elem_id="shown-item")
    guidelines = gr.HTML("", elem_id="guidelines", js_on_load=None)
    # Status and progress are gr.HTML fed with server-rendered safe markdown: cheaper for the browser
    # to update on every label than gr.Markdown, and messages may quote user input.
    status = gr.HTML("", elem_id="status", js_on_load=None)  # filled when the page has loaded (ui/app.py)
    prompt = gr.HTML("", elem_id="prompt", js_on_load=None)

    with gr.Column(visible=False) as pair_panel:
        with gr.Row(equal_height=False):
            resp_a = gr.HTML("", elem_id="resp-a", js_on_load=None)
            resp_b = gr.HTML("", elem_id="resp-b", js_on_load=None)
        # The LLM judge's suggestion, only when the project turns suggestions on (off: blind work).
        suggestion = gr.HTML("", elem_id="judge-suggestion", js_on_load=None)
        choice = gr.Radio(choices=CHOICES, label="Which is better? (keys 1-4, Enter to submit, ? for all keys)",
                          elem_id="choice")
        # Only for A or B: a tie or "both bad" has no winner to be better by.
        strength = gr.Radio(choices=STRENGTHS, label="How much better? (optional)", visible=False,
                            elem_id="strength")
        rewrite = gr.Textbox(label="Both bad: write a better answer (optional, saved as SFT data)", lines=4,
                             visible=False, elem_id="rewrite")

    cards, card_boxes, ranks, ratings = [], [], [], []
    with gr.Column(visible=False) as list_panel:
        for i in range(MAX_CARDS):
            with gr.Group(visible=False, elem_id=f"card-{i}") as box:
                cards.append(gr.HTML("", elem_id=f"card-text-{i}", js_on_load=None))
                # No minimum / maximum here: Gradio would answer a rank out of range with a bare
                # "Error"; labelling.groups_from_ranks refuses it with the range this item takes.
                ranks.append(gr.Number(label="Rank (1 = best; equal numbers = tie)", value=None,
                                       elem_id=f"rank-{i}"))
                ratings.append(gr.Radio(choices=[1, 2, 3, 4, 5], label="Rating (1 = poor, 5 = excellent)",
                                        elem_id=f"rating-{i}"))
            card_boxes.append(box)

    # The rationale goes with the label, so it sits above Submit and only while an item is shown;
    # messages about the submission appear under the button that caused them.
    rationale = gr.Textbox(label="Rationale (optional)", lines=2, visible=False, elem_id="rationale")
    pair_submit = gr.Button("Submit (Enter)", variant="primary", visible=False, elem_id="submit-pair")
    list_submit = gr.Button("Submit (Enter)", variant="primary", visible=False, elem_id="submit-list")
    notice = gr.HTML("", elem_id="submit-notice", js_on_load=None)
    with gr.Row(visible=False) as actions:
        skip = gr.Button("Skip (S)", elem_id="skip")
        undo = gr.Button("Undo last (U)", elem_id="undo")

    waiting = gr.Timer(2.0, active=False)
    tab = AnnotateTab(annotator, project, view, guidelines, progress, status, prompt, pair_panel, resp_a, resp_b,
                      suggestion, choice, strength, rewrite, list_panel, cards, card_boxes, ranks, ratings, rationale,
                      notice, actions, pair_submit, list_submit, skip, undo, waiting, shown_item=shown_item)
    _wire(ctx, tab)
    return tab


def _md(text: str) -> str:
    return markdown_to_safe_html(text)


def _progress_text(ctx: UIContext, project: str | None, user: str | None) -> str:
    if not project:
        return ""
    try:
        p = labelling.progress(ctx.db, project, user)
    except InputError:
        return ""
    worker = ctx.worker_summary(project)
    skipped = f" · {p.skipped} skipped by you" if p.skipped else ""
    return _md(f"**{p.mine}** labelled by you · **{p.for_you}** ready for you{skipped} · **{p.done}** done"
               f" · {p.prompts_without_items} prompts waiting for generation{worker}")


def _show(ctx: UIContext, tab: AnnotateTab, view: ItemView | None, project: str | None, user: str | None,
          message: str, parts: str = "all") -> dict:
    """Updates for the new item (or the empty state) plus a status line.

    `parts` names the outputs the calling event declared: "all", "pair" (a pairwise submit: the
    project, and so the guidelines and the mode, stay the same) or "cards" (a list-mode submit).
    """
    mode = view.mode if view else None
    updates: dict = {tab.view: view, tab.shown_item: str(view.item_id) if view else "", tab.status: _md(message), tab.progress: _progress_text(ctx, project, user),
                     tab.rationale: gr.update(value="", visible=view is not None), tab.notice: "",
                     tab.waiting: gr.Timer(active=view is None),
                     tab.prompt: render_messages(view.prompt_messages, view.is_chat) if view else ""}
    if parts == "all" or view is None:
        # Undo stays at hand after the last item (a slip on it can still be taken back); Skip only
        # with an item to skip.
        updates[tab.actions] = gr.update(visible=view is not None or bool(project and user))
        updates[tab.skip] = gr.update(visible=view is not None)
        updates[tab.pair_panel] = gr.update(visible=mode == "pairwise")
        updates[tab.list_panel] = gr.update(visible=mode in ("listwise", "pointwise"))
        updates[tab.pair_submit] = gr.update(visible=mode == "pairwise")
        updates[tab.list_submit] = gr.update(visible=mode in ("listwise", "pointwise"))
    if parts == "all":
        guidelines = ""
        if project:
            try:
                guidelines = get_settings(ctx.db, project).guidelines
            except InputError:
                pass
        updates[tab.guidelines] = markdown_to_safe_html(guidelines) if guidelines else ""
    if parts in ("all", "pair"):
        updates.update(_pair_updates(ctx, tab, view))
    if parts in ("all", "cards"):
        updates.update(_card_updates(tab, view))
    return updates


def _pair_updates(ctx: UIContext, tab: AnnotateTab, view: ItemView | None) -> dict:
    mode = view.mode if view else None
    updates: dict = {tab.choice: gr.update(value=None)}
    updates[tab.strength] = gr.update(value=None, visible=False)
    updates[tab.rewrite] = gr.update(value="", visible=False)
    if mode == "pairwise":
        updates[tab.resp_a] = _render(view.responses[0], "A")
        updates[tab.resp_b] = _render(view.responses[1], "B")
        updates[tab.suggestion] = _suggestion_text(ctx, view)
    else:
        updates[tab.resp_a] = updates[tab.resp_b] = updates[tab.suggestion] = ""
    return updates


def _suggestion_text(ctx: UIContext, view: ItemView) -> str:
    """The judge's suggestion in the sides this annotator sees (verdicts are stored in the item's order)."""
    suggestion = judge.suggestion_for(ctx.db, view.item_id, view.project)
    if suggestion is None:
        return ""
    side = suggestion.as_shown(view.shown_order)
    said = "a tie" if side == "tie" else f"**{side}**"
    confidence = f" ({suggestion.confidence:.0%} sure)" if suggestion.confidence is not None and side != "tie" else ""
    return _md(f"🤖 Judge suggests: {said}{confidence} · a model's guess, not a rule: label what you see.")


def _card_updates(tab: AnnotateTab, view: ItemView | None) -> dict:
    mode = view.mode if view else None
    if mode not in ("listwise", "pointwise"):
        # The card panel is hidden: leave its 32 components alone.
        return {}
    updates: dict = {}
    for i in range(MAX_CARDS):
        present = i < len(view.responses)
        updates[tab.card_boxes[i]] = gr.update(visible=present)
        updates[tab.cards[i]] = _render(view.responses[i], f"Response {i + 1}") if present else ""
        updates[tab.ranks[i]] = gr.update(value=None, visible=present and mode == "listwise")
        updates[tab.ratings[i]] = gr.update(value=None, visible=present and mode == "pointwise")
    return updates


def _render(response: labelling.ShownResponse, title: str) -> str:
    # Marked as Compare marks its answers: a reader should not judge an answer cut mid-sentence
    # as if it had ended there.
    return render_response(response.text, f"{title} · cut at the token limit" if response.truncated else title)


def _restored(tab: AnnotateTab, view: ItemView | None, undone: labelling.Undone) -> dict:
    """The undone label back in the fields, so the annotator edits it rather than starts again."""
    if view is None or view.item_id != undone.item_id:
        return {}
    updates = {tab.rationale: gr.update(value=undone.rationale or "", visible=True)}
    if view.mode == "pairwise":
        choice = undone.choice_as_shown(view)
        updates[tab.choice] = gr.update(value=choice)
        updates[tab.strength] = gr.update(value=undone.strength, visible=choice in ("a", "b"))
        updates[tab.rewrite] = gr.update(value=undone.rewrite or "", visible=choice == "both_bad")
    elif view.mode == "listwise":
        updates.update({box: gr.update(value=rank) for box, rank in zip(tab.ranks, undone.ranks_as_shown(view))})
    else:
        updates.update({radio: gr.update(value=score)
                        for radio, score in zip(tab.ratings, undone.scores_as_shown(view))})
    return updates


def _load_next(ctx: UIContext, tab: AnnotateTab, project: str | None, user: str | None, done_message: str = "",
               parts: str = "all") -> dict:
    user = (user or "").strip()
    if not project or not user:
        return _show(ctx, tab, None, project, user, "Enter your name and pick a project to start.", parts)
    try:
        view = labelling.next_item(ctx.db, project, user)
    except InputError as exc:
        return _show(ctx, tab, None, project, user, f"⚠️ {exc}", parts)
    if view is None:
        ctx.wake_worker()
        message = labelling.progress(ctx.db, project, user).nothing_for_you()
        return _show(ctx, tab, None, project, user, " ".join(filter(None, [done_message, message])), parts)
    message = " ".join(filter(None, [done_message, f"Item {view.item_id}."]))
    return _show(ctx, tab, view, project, user, message, parts)


def _annotator(ctx: UIContext, request: gr.Request, project, user, view: ItemView | None,
               permission: Permission = Permission.label) -> str:
    """Who is labelling: the login's name (with accounts) or the typed one (local mode), once they may
    do ``permission`` on the project picked and on the project of the item on screen."""
    actor = caller(ctx, request, permission, project, user)
    if view is not None and view.project != project:
        check(ctx, actor, permission, view.project)
    if view is not None and not actor.local and view.user != actor.name:
        # The session's item was served to another login: never label or skip it under this one.
        raise gr.Error("this page was opened by another user: reload it", print_exception=False)
    return actor.name or ""


def _wire(ctx: UIContext, tab: AnnotateTab) -> None:
    outputs = tab.all_outputs()
    item_inputs = [tab.project, tab.annotator, tab.view]

    def show(project, user, view):
        # Keep the item on screen if it still belongs to this project and annotator.
        if view is not None and view.project == project and view.user == (user or "").strip():
            return {tab.progress: _progress_text(ctx, project, user)}
        if view is not None:
            # A new name or project: the item shown under the old one goes back to the queue now,
            # not when its lease runs out.
            labelling.release(ctx.db, view)
        return _load_next(ctx, tab, project, user)

    tab.start = show

    def start(project, user, view, request: gr.Request):
        return show(project, _annotator(ctx, request, project, user, view), view)

    def project_changed(project, user, view, request: gr.Request):
        user = _annotator(ctx, request, project, user, view)
        # The page-load handler sets the project and the remembered name in one reply, but the
        # browser can send the project's change event before it has applied the name: a blank name
        # here is then a stale snapshot, not the annotator clearing it (the name box's own events
        # handle that). The item on screen already belongs to this project, so it stays.
        if view is not None and view.project == project:
            return {tab.progress: _progress_text(ctx, project, view.user)}
        return show(project, user, view)

    tab.project.change(project_changed, item_inputs, outputs, api_name="annotate_pick_project")
    tab.annotator.submit(start, item_inputs, outputs, api_name="annotate_name_entered")
    tab.annotator.blur(start, item_inputs, outputs, api_name="annotate_name_left")

    def check_submit(view: ItemView, shown_item) -> None:
        """A submit answers the item this session was shown, and not sooner than anyone can read it."""
        if str(shown_item or "").strip() != str(view.item_id):
            raise InputError(f"this answer was for item {shown_item or '(none)'}, but item {view.item_id} is the one on screen: "
                             "nothing was saved")
        labelling.check_dwell(view, ctx.min_label_ms)

    def recorded(receipt: labelling.Receipt, said: str) -> str:
        note = "already saved" if receipt.duplicate else "saved"
        return f"✅ {said} {note} (item {receipt.item_id})."

    def submit_pair(project, user, view, shown_item, choice, strength, rewrite, rationale, request: gr.Request):
        user = _annotator(ctx, request, project, user, view)
        if view is None or view.mode != "pairwise":
            return _load_next(ctx, tab, project, user, parts="pair")
        try:
            check_submit(view, shown_item)
            # The rewrite box keeps its text while hidden: it goes with "both bad" only.
            receipt = labelling.submit_pairwise(ctx.db, view, choice, strength=strength or None, rationale=rationale,
                                                rewrite=rewrite if choice == "both_bad" else None)
        except InputError as exc:
            return {tab.notice: _md(f"⚠️ {exc}")}
        said = dict((value, text) for text, value in CHOICES)[choice]
        return _load_next(ctx, tab, project, user, recorded(receipt, said), parts="pair")

    tab.pair_submit.click(submit_pair, [*item_inputs, tab.shown_item, tab.choice, tab.strength, tab.rewrite, tab.rationale],
                          tab.common_outputs() + tab.pair_outputs(), api_name="submit_pairwise", queue=False,
                          show_progress="hidden")

    def submit_list(request: gr.Request, project, user, view, shown_item, rationale, *cards):
        user = _annotator(ctx, request, project, user, view)
        if view is None or view.mode not in ("listwise", "pointwise"):
            return _load_next(ctx, tab, project, user, parts="cards")
        n = len(view.responses)
        ranks, ratings = cards[:MAX_CARDS][:n], cards[MAX_CARDS:][:n]
        try:
            check_submit(view, shown_item)
            if view.mode == "listwise":
                groups = labelling.groups_from_ranks(view, list(ranks))
                receipt, said = labelling.submit_ranking(ctx.db, view, groups, rationale=rationale), "ranking"
            else:
                receipt = labelling.submit_ratings(ctx.db, view, list(ratings), rationale=rationale)
                said = "ratings"
        except InputError as exc:
            return {tab.notice: _md(f"⚠️ {exc}")}
        return _load_next(ctx, tab, project, user, recorded(receipt, said), parts="cards")

    tab.list_submit.click(submit_list, [*item_inputs, tab.shown_item, tab.rationale, *tab.ranks, *tab.ratings],
                          tab.common_outputs() + tab.card_outputs(), api_name="submit_list", queue=False,
                          show_progress="hidden")

    def skip(project, user, view, request: gr.Request):
        user = _annotator(ctx, request, project, user, view)
        if view is not None:
            labelling.skip(ctx.db, view)
        return _load_next(ctx, tab, project, user, "Skipped.")

    tab.skip.click(skip, item_inputs, outputs, api_name="skip_item")

    def undo(project, user, view, request: gr.Request):
        # Only the caller's own labels: the name is the login's, never one the client sends.
        user = _annotator(ctx, request, project, user, view, Permission.undo_own)
        try:
            undone = labelling.undo_last(ctx.db, project, (user or "").strip()) if project and user else None
        except InputError as exc:
            return {tab.status: _md(f"⚠️ {exc}")}
        if undone is None:
            return {tab.status: _md("Nothing to undo.")}
        if view is not None and view.item_id != undone.item_id:
            labelling.release(ctx.db, view)  # so the undone item, the only one still held, comes back first
        updates = _load_next(ctx, tab, project, user, f"↩️ Label on item {undone.item_id} removed: change it and "
                                                       "submit again.")
        return {**updates, **_restored(tab, updates[tab.view], undone)}

    tab.undo.click(undo, item_inputs, outputs, api_name="undo_last")

    # .input, not .change: only a click by the annotator, not the reset when the next item loads.
    def choice_fields(c, request: gr.Request):
        caller(ctx, request, Permission.label)
        return gr.update(visible=c in ("a", "b")), gr.update(visible=c == "both_bad")

    tab.choice.input(choice_fields, tab.choice, [tab.strength, tab.rewrite], queue=False, show_progress="hidden",
                     api_name="annotate_choice_fields")

    def wait_for_items(project, user, view, request: gr.Request):
        # Active only while nothing is on screen: shows a new item as soon as one is generated.
        user = _annotator(ctx, request, project, user, view)
        if view is None and project and (user or "").strip():
            return _load_next(ctx, tab, project, user)
        return {tab.waiting: gr.Timer(active=False)}

    tab.waiting.tick(wait_for_items, item_inputs, outputs, show_progress="hidden", api_name="annotate_wait_for_items")

    def progress(project, user, request: gr.Request):
        return _progress_text(ctx, project, _annotator(ctx, request, project, user, None))

    gr.Timer(5.0).tick(progress, [tab.project, tab.annotator], tab.progress, show_progress="hidden", queue=False,
                       api_name="annotate_progress")


def release_on_close(ctx: UIContext, tab: AnnotateTab, demo: gr.Blocks) -> None:
    """When a browser session ends (tab closed or reloaded: Gradio's heartbeat stops), give back the
    lease on the item it showed, so others may take it now instead of when the lease runs out."""

    def closed(request: gr.Request) -> None:
        # Gradio keeps a closed session's state for an hour; read the item it showed from there.
        session = demo.state_holder.session_data.get(request.session_hash)
        view = session.state_data.get(tab.view._id) if session is not None else None
        if isinstance(view, ItemView):
            labelling.release(ctx.db, view)

    demo.unload(closed)
