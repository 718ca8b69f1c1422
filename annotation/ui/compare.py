"""The Compare tab, in three parts:

1. Side by side: two or more models (the base model, trained policy adapters) answer one prompt with
   the same seed and sampling parameters; each column shows the answer with its length in tokens,
   the reward model's score (when one is picked) and the per-token KL estimate to the base.
2. Blind arena: two models answer a prompt; the answers are shown as "A" and "B" in random order
   with the names hidden; the vote (A / B / tie / both bad) is stored as a pairwise label of the
   chosen project (annotation.services.arena), and only then are the names revealed.
3. Leaderboard: Bradley-Terry ratings with bootstrap intervals, votes and the win-rate matrix,
   refreshed after every vote and whenever the tab is opened.

Prompts are typed, or drawn from a project's held-out prompts (those nobody has labelled yet). All
model text goes through annotation.render (markdown with raw HTML escaped).
"""
from __future__ import annotations

import html
import random
from dataclasses import dataclass, field

import gradio as gr
import pandas as pd

from alignment.evaluation import kl_estimate_text
from annotation.render import render_messages, render_response
from annotation.services import arena, catalogue, compare, projects
from annotation.auth.permissions import PermissionDenied, require
from annotation.ui.access import Actor, Permission, caller, check, has, project_choices
from annotation.ui.context import UIContext
from storage.errors import InputError

MAX_COLUMNS = compare.MAX_MODELS
VOTES = (("a", "A is better", "arena-vote-a"), ("b", "B is better", "arena-vote-b"),
         ("tie", "Tie", "arena-vote-tie"), ("both_bad", "Both bad", "arena-vote-both-bad"))
BOARD_COLUMNS = ["rank", "model", "rating", "95% CI", "votes", "wins", "losses", "ties", "both bad"]
ALL_PROJECTS = "all projects"
FEW_VOTES = 10
GENERATING = "⏳ generating… (loading the models can take a while the first time)"


@dataclass
class CompareTab:
    # Shared: sampling
    temperature: gr.Number
    top_p: gr.Number
    max_new_tokens: gr.Number
    seed: gr.Number
    # 1. side by side
    models: gr.Dropdown
    reward: gr.Dropdown
    project: gr.Dropdown
    prompt: gr.Textbox
    draw: gr.Button
    run: gr.Button
    status: gr.Markdown
    columns: list[gr.HTML]
    # 2. arena
    arena_project: gr.Dropdown
    annotator: gr.Textbox
    model_1: gr.Dropdown
    model_2: gr.Dropdown
    arena_prompt: gr.Textbox
    arena_draw: gr.Button
    new_match: gr.Button
    arena_status: gr.Markdown
    prompt_view: gr.HTML
    cards: list[gr.HTML]
    votes: list[gr.Button]
    reveal: gr.HTML
    match: gr.State
    drawn: gr.State
    arena_drawn: gr.State
    # 3. leaderboard
    board_project: gr.Dropdown
    board: gr.Dataframe
    win_rates: gr.Dataframe
    board_note: gr.Markdown
    board_refresh: gr.Button
    select_outputs: list = field(default_factory=list)
    side_by_side: gr.Column | None = None

    @property
    def select_inputs(self) -> list:
        return [self.models, self.reward, self.project, self.arena_project, self.model_1, self.model_2,
                self.board_project]


# --------------------------------------------------------------------------------------------
# Choices and tables
# --------------------------------------------------------------------------------------------

def _keep(value, values, default=None):
    return value if value in values else default


def model_choices(ctx: UIContext) -> list[tuple[str, str]]:
    return [(o.name if o.adapter else f"{o.name} (base)", o.key)
            for o in catalogue.model_options(ctx.db, ctx.default_model)]


def refresh_choices(ctx: UIContext, actor: Actor, models=None, reward=None, project=None, arena_project=None,
                    model_1=None, model_2=None, board_project=None) -> list:
    """Every picker's choices from the database, keeping what is still valid: the projects the actor
    works on, reward models to those who may generate on demand, all projects' votes to admins."""
    options = model_choices(ctx)
    keys = [k for _, k in options]
    rewards = [("none", "")] + (catalogue.reward_options(ctx.db) if has(actor, Permission.run_inference) else [])
    names = project_choices(ctx, actor, projects.project_names(ctx.db))
    first = names[0] if names else None
    boards = [ALL_PROJECTS, *names] if has(actor, Permission.view_team_stats) else names
    picked = [k for k in (models or []) if k in keys] or keys[:2]
    arena_options = [("random pair", "")] + options
    return [
        gr.update(choices=options, value=picked),
        gr.update(choices=rewards, value=_keep(reward, [v for _, v in rewards], "")),
        gr.update(choices=names, value=_keep(project, names, first)),
        gr.update(choices=names, value=_keep(arena_project, names, first)),
        gr.update(choices=arena_options, value=_keep(model_1, keys, "")),
        gr.update(choices=arena_options, value=_keep(model_2, keys, "")),
        gr.update(choices=boards, value=_keep(board_project, names, boards[0] if boards else None)),
    ]


def board_permission(project: str | None) -> tuple[Permission, str | None]:
    """Everyone's votes are for admins; a project's, for those who vote in it."""
    return (Permission.view_team_stats, None) if project in (None, "", ALL_PROJECTS) else (Permission.vote_arena, project)


def _fmt(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def leaderboard_tables(ctx: UIContext, project: str | None = None) -> tuple[list[list], pd.DataFrame, str]:
    """(rating rows, win-rate matrix, a note) for all projects or one."""
    scope = None if project in (None, "", ALL_PROJECTS) else project
    try:
        board = arena.arena_leaderboard(ctx.db, scope)
    except InputError as exc:
        return [], pd.DataFrame(), f"⚠️ {exc}"
    rows = [[rank + 1 if r.rating is not None else "–", r.model, _fmt(r.rating),
             # With its n: "1000 – 1000" after one vote is no certainty, only too few votes.
             f"{_fmt(r.ci_low)} – {_fmt(r.ci_high)} (n={r.decided})" if r.ci_low is not None else "–",
             r.votes, r.wins, r.losses, r.ties, r.both_bad] for rank, r in enumerate(board.ratings)]
    matrix = pd.DataFrame({"row beats column": board.models,
                           **{col: [_fmt(None if board.win_rates[i][j] is None else 100 * board.win_rates[i][j])
                                    + ("%" if board.win_rates[i][j] is not None else "")
                                    for i in range(len(board.models))]
                              for j, col in enumerate(board.models)}})
    if not board.total_votes:
        note = "No arena votes yet: vote in the blind arena above."
    else:
        note = (f"{board.total_votes} vote(s). Bradley-Terry ratings (mean = 1000; +400 points = 10:1 odds), "
                f"{int(board.confidence * 100)}% percentile-bootstrap intervals over {board.n_bootstrap} resamples; "
                f"ties count half a win each side, 'both bad' is counted but not rated.")
        few = [r.model for r in board.ratings if r.rating is not None and r.decided < FEW_VOTES]
        if few:
            note += (f" Fewer than {FEW_VOTES} decided votes for {', '.join(few)}: resampling so few votes "
                     f"understates the uncertainty, read those intervals as a floor.")
        if board.notes:
            note += " " + " ".join(board.notes) + "."
    return rows, matrix, note


def _title(answer, params) -> str:
    parts = [answer.label, f"{answer.num_tokens} tokens"]
    if answer.finish_reason == "length":
        parts[-1] += " (cut at the limit)"
    if answer.rm_score is not None:
        parts.append(f"RM {answer.rm_score:.3f}")
    # The KL figure is estimated from this one sampled answer: say so, and under which settings.
    parts.append("base" if not answer.adapter else kl_estimate_text(answer.kl_to_base, 1, params))
    parts.append(f"{answer.seconds:.1f}s")
    return " · ".join(parts)


def _prompt_messages(text: str, drawn: dict | None) -> tuple[list[dict[str, str]], bool]:
    """The prompt to answer: the drawn one while the box still shows it (a chat keeps its turns),
    otherwise the typed text."""
    if drawn and (text or "").strip() == drawn["text"].strip():
        return drawn["messages"], drawn["is_chat"]
    return arena.typed_prompt(text), False


def _draw(ctx: UIContext, project: str | None) -> tuple[str, dict]:
    if not project:
        raise InputError("pick a project to draw a held-out prompt from")
    drawn = arena.draw_heldout_prompt(ctx.db, project)
    return drawn.text, {"text": drawn.text, "messages": drawn.messages, "is_chat": drawn.is_chat,
                        "prompt_id": drawn.prompt_id}


def _seed(value) -> int | None:
    if value is None or value == "":
        return None
    if float(value) != int(value) or int(value) < 0:
        raise InputError(f"seed must be a whole number >= 0 (or empty for a random one), got {value!r}")
    return int(value)


# --------------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------------

def build_compare_tab(ctx: UIContext) -> CompareTab:
    gr.Markdown("Sampling settings (used by both the side-by-side view and the arena)")
    with gr.Row():
        temperature = gr.Number(value=0.7, minimum=0, maximum=5, label="Temperature (0 = greedy)",
                                elem_id="cmp-temperature")
        top_p = gr.Number(value=0.95, minimum=0.01, maximum=1, label="Top-p", elem_id="cmp-top-p")
        max_new_tokens = gr.Number(value=128, precision=0, minimum=1, maximum=4096, label="Max new tokens",
                                   elem_id="cmp-max-new-tokens")
        seed = gr.Number(value=0, precision=0, minimum=0, label="Seed (side by side; each arena match draws its own)",
                         elem_id="cmp-seed")

    # Generating on demand is for admins: the page hides this part from other roles.
    with gr.Column(elem_id="side-by-side") as side_by_side:
        gr.Markdown("### 1 · Side by side")
        with gr.Row():
            models = gr.Dropdown(label="Models (two or more, on one base model)", choices=[], multiselect=True,
                                 elem_id="cmp-models")
            reward = gr.Dropdown(label="Reward model (scores every answer)", choices=[("none", "")], value="",
                                 elem_id="cmp-reward")
        with gr.Row():
            project = gr.Dropdown(label="Draw prompts from project", choices=[], elem_id="cmp-project")
            draw = gr.Button("Draw a held-out prompt", elem_id="cmp-draw", scale=0)
        prompt = gr.Textbox(label="Prompt", lines=2, elem_id="cmp-prompt")
        run = gr.Button("Answer side by side", variant="primary", elem_id="cmp-run")
        status = gr.Markdown("", elem_id="cmp-status")
        with gr.Row(equal_height=False):
            columns = [gr.HTML("", visible=False, elem_id=f"cmp-col-{i}") for i in range(MAX_COLUMNS)]

    gr.Markdown("### 2 · Blind arena\nTwo models answer; you see them as A and B in random order and learn "
                "which was which only after voting. Every vote is stored as a pairwise label of the project.")
    with gr.Row():
        arena_project = gr.Dropdown(label="Store votes in project (pairwise)", choices=[], elem_id="arena-project")
        annotator = gr.Textbox(label="Your name", elem_id="arena-annotator")
        model_1 = gr.Dropdown(label="Model 1", choices=[("random pair", "")], value="", elem_id="arena-model-1")
        model_2 = gr.Dropdown(label="Model 2", choices=[("random pair", "")], value="", elem_id="arena-model-2")
    with gr.Row():
        arena_prompt = gr.Textbox(label="Prompt (empty: draw a held-out prompt of the project)", lines=2,
                                  elem_id="arena-prompt")
        arena_draw = gr.Button("Draw a held-out prompt", elem_id="arena-draw", scale=0)
    new_match = gr.Button("New match", variant="primary", elem_id="arena-new")
    arena_status = gr.Markdown("", elem_id="arena-status")
    prompt_view = gr.HTML("", elem_id="arena-prompt-view")
    with gr.Row(equal_height=False):
        cards = [gr.HTML("", elem_id="arena-card-a"), gr.HTML("", elem_id="arena-card-b")]
    with gr.Row():
        votes = [gr.Button(text, interactive=False, elem_id=elem_id) for _, text, elem_id in VOTES]
    reveal = gr.HTML("", elem_id="arena-reveal")

    gr.Markdown("### 3 · Leaderboard")
    with gr.Row():
        board_project = gr.Dropdown(label="Votes from", choices=[ALL_PROJECTS], value=ALL_PROJECTS,
                                    elem_id="board-project")
        board_refresh = gr.Button("Refresh", elem_id="board-refresh", scale=0)
    board = gr.Dataframe(headers=BOARD_COLUMNS, value=[], interactive=False, elem_id="board-table")
    gr.Markdown("Win rate of the row's model against the column's: (wins + ties/2) / decided votes.")
    win_rates = gr.Dataframe(value=pd.DataFrame(), interactive=False, elem_id="board-winrates")
    board_note = gr.Markdown("", elem_id="board-note")

    tab = CompareTab(temperature, top_p, max_new_tokens, seed, models, reward, project, prompt, draw, run, status,
                     columns, arena_project, annotator, model_1, model_2, arena_prompt, arena_draw, new_match,
                     arena_status, prompt_view, cards, votes, reveal, gr.State(None), gr.State(None), gr.State(None),
                     board_project, board, win_rates, board_note, board_refresh)
    tab.side_by_side = side_by_side
    tab.select_outputs = [models, reward, project, arena_project, model_1, model_2, board_project, board, win_rates,
                          board_note]
    _wire_side_by_side(ctx, tab)
    _wire_arena(ctx, tab)
    _wire_board(ctx, tab)
    return tab


def on_select(ctx: UIContext, request: gr.Request, *current) -> list:
    """Opening the tab: fresh model / project choices and the leaderboard."""
    actor = caller(ctx, request, Permission.vote_arena)
    updates = refresh_choices(ctx, actor, *current)
    board_project = updates[-1]["value"]
    if board_project is None:  # no project to show the votes of
        return [*updates, [], pd.DataFrame(), ""]
    return [*updates, *leaderboard_tables(ctx, board_project)]


# --------------------------------------------------------------------------------------------
# Wiring
# --------------------------------------------------------------------------------------------

def _sampling(temperature, top_p, max_new_tokens, seed):
    return compare.sampling_params(temperature if temperature is not None else 0.7,
                                   top_p if top_p is not None else 0.95,
                                   max_new_tokens if max_new_tokens is not None else 128, _seed(seed))


def _wire_side_by_side(ctx: UIContext, tab: CompareTab) -> None:
    def draw(project, request: gr.Request):
        caller(ctx, request, Permission.run_inference)
        try:
            text, drawn = _draw(ctx, project)
        except InputError as exc:
            return {tab.status: f"⚠️ {exc}"}
        return {tab.prompt: text, tab.drawn: drawn, tab.status: f"Drawn from {project}'s held-out prompts."}

    tab.draw.click(draw, tab.project, [tab.prompt, tab.drawn, tab.status], api_name="compare_draw")

    def starting(request: gr.Request):
        caller(ctx, request, Permission.run_inference)
        return GENERATING

    def answer(keys, reward, text, drawn, temperature, top_p, max_new_tokens, seed, request: gr.Request):
        actor = caller(ctx, request, Permission.run_inference)
        if reward:  # a reward model is a folder on the server
            check(ctx, actor, Permission.use_server_paths)
        hidden = {column: gr.update(value="", visible=False) for column in tab.columns}
        try:
            if len([k for k in keys or [] if k]) < 2:
                raise InputError("pick at least two models to compare")
            messages, _ = _prompt_messages(text, drawn)
            params = _sampling(temperature, top_p, max_new_tokens, seed)
            options = catalogue.resolve_models(ctx.db, keys, ctx.default_model)
            answers = compare.answer(options, messages, params, seed=params.seed, reward=reward or None)
        except InputError as exc:
            return {tab.status: f"⚠️ {exc}", **hidden}
        updates = dict(hidden)
        for column, a in zip(tab.columns, answers):
            updates[column] = gr.update(value=render_response(a.text, _title(a, params)), visible=True)
        seed_used = answers[0].seed if answers else None
        updates[tab.status] = (f"✅ {len(answers)} answers, seed {seed_used}, temperature {params.temperature}, "
                               f"top-p {params.top_p}, up to {params.max_new_tokens} new tokens.")
        return updates

    inputs = [tab.models, tab.reward, tab.prompt, tab.drawn, tab.temperature, tab.top_p, tab.max_new_tokens, tab.seed]
    tab.run.click(starting, None, tab.status, api_name="compare_starting").then(
        answer, inputs, [tab.status, *tab.columns], api_name="compare_side_by_side")


def _wire_arena(ctx: UIContext, tab: CompareTab) -> None:
    disabled = [gr.update(interactive=False) for _ in tab.votes]

    def draw(project, request: gr.Request):
        caller(ctx, request, Permission.vote_arena, project)
        try:
            text, drawn = _draw(ctx, project)
        except InputError as exc:
            return {tab.arena_status: f"⚠️ {exc}"}
        return {tab.arena_prompt: text, tab.arena_drawn: drawn, tab.arena_status: ""}

    tab.arena_draw.click(draw, tab.arena_project, [tab.arena_prompt, tab.arena_drawn, tab.arena_status],
                         api_name="arena_draw")

    def starting(request: gr.Request):
        caller(ctx, request, Permission.vote_arena)
        # Names and answers of the previous match go away before the next one is generated.
        return [GENERATING, None, "", "", "", "", *disabled]

    clear_outputs = [tab.arena_status, tab.match, tab.prompt_view, *tab.cards, tab.reveal, *tab.votes]
    start_event = tab.new_match.click(starting, None, clear_outputs, api_name="arena_starting")

    def start(project, model_1, model_2, text, drawn, temperature, top_p, max_new_tokens, request: gr.Request):
        # The models are picked by catalogue key (never a path), so a member may start a match.
        caller(ctx, request, Permission.vote_arena, project)
        try:
            if not project:
                raise InputError("pick a project to store the votes in")
            picked = [k for k in (model_1, model_2) if k]
            if len(picked) == 1:
                raise InputError("pick two models, or leave both on 'random pair'")
            if len(picked) == 2 and picked[0] == picked[1]:
                raise InputError("the same model is picked twice: pick two different models")
            if not (text or "").strip():
                text, drawn = _draw(ctx, project)
            messages, is_chat = _prompt_messages(text, drawn)
            params = _sampling(temperature, top_p, max_new_tokens, None)  # a fresh seed per match
            match = arena.start_match(ctx.db, project, picked, messages, params, is_chat=is_chat,
                                      default_model=ctx.default_model, rng=random.Random())
        except InputError as exc:
            return {tab.arena_status: f"⚠️ {exc}"}
        updates = {tab.match: match, tab.arena_prompt: text, tab.arena_drawn: drawn,
                   tab.arena_status: "Which answer is better? The names are shown after your vote.",
                   tab.prompt_view: render_messages(match.prompt_messages, match.is_chat)}
        for card, side, letter in zip(tab.cards, match.shown, "AB"):
            updates[card] = render_response(side.text, letter)
        for button in tab.votes:
            updates[button] = gr.update(interactive=True)
        return updates

    start_event.then(start, [tab.arena_project, tab.model_1, tab.model_2, tab.arena_prompt, tab.arena_drawn,
                             tab.temperature, tab.top_p, tab.max_new_tokens],
                     [tab.match, tab.arena_prompt, tab.arena_drawn, tab.arena_status, tab.prompt_view, *tab.cards,
                      *tab.votes], api_name="arena_new_match")

    def vote(choice, match, user, board_project, request: gr.Request):
        # The vote is a label of the match's project, under the login's name (the typed one in local mode).
        actor = caller(ctx, request, Permission.vote_arena, match.project if match is not None else None, user)
        try:
            if match is None:
                raise InputError("start a match first")
            receipt = arena.record_arena_vote(ctx.db, match, actor.name, choice)
        except InputError as exc:
            return {tab.arena_status: f"⚠️ {exc}"}
        a, b = match.shown
        said = {"a": "A is better", "b": "B is better", "tie": "a tie", "both_bad": "both bad"}[choice]
        updates = {
            tab.arena_status: f"✅ Vote saved (label {receipt.label_ids[0]}): {said}. Start a new match for more.",
            tab.reveal: ('<div class="ps-reveal">'
                         f'<b>A</b> was <b class="arena-name-a">{html.escape(a.label or "")}</b> · '
                         f'<b>B</b> was <b class="arena-name-b">{html.escape(b.label or "")}</b></div>'),
            tab.cards[0]: render_response(a.text, f"A · {a.label}"),
            tab.cards[1]: render_response(b.text, f"B · {b.label}"),
        }
        try:  # the leaderboard on screen, when the voter may see it
            require(actor, *board_permission(board_project), db=ctx.db)
            updates.update(zip([tab.board, tab.win_rates, tab.board_note], leaderboard_tables(ctx, board_project)))
        except PermissionDenied:
            pass
        for button in tab.votes:
            updates[button] = gr.update(interactive=False)
        return updates

    outputs = [tab.arena_status, tab.reveal, *tab.cards, *tab.votes, tab.board, tab.win_rates, tab.board_note]
    for (choice, _, _), button in zip(VOTES, tab.votes):
        # One handler; the choice is the only difference between the buttons.
        def vote_for(match, user, board_project, request: gr.Request, choice=choice):
            return vote(choice, match, user, board_project, request)

        button.click(vote_for, [tab.match, tab.annotator, tab.board_project], outputs, api_name=f"arena_vote_{choice}")


def _wire_board(ctx: UIContext, tab: CompareTab) -> None:
    outputs = [tab.board, tab.win_rates, tab.board_note]

    def board(project, request: gr.Request):
        check(ctx, caller(ctx, request, Permission.vote_arena), *board_permission(project))
        return leaderboard_tables(ctx, project)

    tab.board_refresh.click(board, tab.board_project, outputs, api_name="leaderboard_refresh")
    tab.board_project.change(board, tab.board_project, outputs, api_name="leaderboard_project")
