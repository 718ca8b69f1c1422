"""The Best-of-N tab: sample N answers to a prompt with a policy (base or adapter), score them with a
trained reward model, show all N with their scores and the RM's pick, and let the annotator say
which answer is really best. The candidates are stored as an item of the chosen project, and the
verdict on the RM's pick is stored as a pairwise label (A = the RM's pick), so it can train too.
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from alignment.run_folder import ModelKind
from annotation.render import render_response
from annotation.services import best_of_n as bon
from annotation.services import catalogue, projects
from annotation.ui.access import Permission, caller, check
from annotation.ui.context import UIContext
from storage.errors import InputError

MAX_N = 8


@dataclass
class BestOfNTab:
    project: gr.Dropdown
    reward: gr.Dropdown
    policy: gr.Dropdown
    prompt: gr.Textbox
    n: gr.Number
    max_new_tokens: gr.Number
    run: gr.Button
    status: gr.Markdown
    state: gr.State
    cards: list[gr.HTML]
    pick: gr.Radio
    verdict: gr.Button
    annotator: gr.Textbox


def choices(ctx: UIContext, kind: str, with_base: bool = False) -> list[tuple[str, str]]:
    rows = catalogue.trained_choices(ctx.db, kind)
    return ([("base model (no adapter)", "")] if with_base else []) + rows


def refresh(ctx: UIContext, request: gr.Request, project=None, reward=None, policy=None):
    caller(ctx, request, Permission.run_inference)
    names = projects.project_names(ctx.db)
    rewards, policies = choices(ctx, ModelKind.REWARD_MODEL), choices(ctx, ModelKind.POLICY_ADAPTER, with_base=True)
    keep = lambda value, options: value if value in [v for _, v in options] else (options[0][1] if options else None)  # noqa: E731
    return (gr.update(choices=names, value=project if project in names else (names[0] if names else None)),
            gr.update(choices=rewards, value=keep(reward, rewards)),
            gr.update(choices=policies, value=keep(policy, policies)))


def build_best_of_n_tab(ctx: UIContext) -> BestOfNTab:
    with gr.Row():
        project = gr.Dropdown(label="Store candidates in project", choices=[], elem_id="bon-project")
        reward = gr.Dropdown(label="Reward model", choices=[], elem_id="bon-reward")
        policy = gr.Dropdown(label="Policy", choices=[], elem_id="bon-policy")
    prompt = gr.Textbox(label="Prompt", lines=2, elem_id="bon-prompt")
    with gr.Row():
        n = gr.Number(value=4, precision=0, minimum=1, maximum=MAX_N, label="N", elem_id="bon-n")
        max_new_tokens = gr.Number(value=64, precision=0, minimum=1, maximum=1024, label="Max new tokens",
                                   elem_id="bon-max-new-tokens")
    run = gr.Button("Sample and score", variant="primary", elem_id="bon-run")
    status = gr.Markdown("", elem_id="bon-status")
    state = gr.State(None)
    cards = [gr.HTML("", visible=False, elem_id=f"bon-card-{i}", js_on_load=None) for i in range(MAX_N)]
    with gr.Row():
        annotator = gr.Textbox(label="Your name", elem_id="bon-annotator")
        pick = gr.Radio(choices=[], label="Which answer is best?", elem_id="bon-pick")
    # Enabled only while there is a sample to judge: a live button with nothing to act on misleads.
    verdict = gr.Button("Record my verdict on the RM's pick", interactive=False, elem_id="bon-verdict")
    tab = BestOfNTab(project, reward, policy, prompt, n, max_new_tokens, run, status, state, cards, pick, verdict,
                     annotator)
    _wire(ctx, tab)
    return tab


def _wire(ctx: UIContext, tab: BestOfNTab) -> None:
    def sample(project, reward, policy, prompt, n, max_new_tokens, request: gr.Request):
        # The reward model and the policy are folders on the server.
        check(ctx, caller(ctx, request, Permission.run_inference), Permission.use_server_paths)
        try:
            if not project or not reward:
                raise InputError("pick a project and a reward model (train one in the Train tab)")
            if not (prompt or "").strip():
                raise InputError("type a prompt")
            with tempfile.TemporaryDirectory() as tmp:
                prompts_file = Path(tmp) / "prompt.jsonl"
                prompts_file.write_text(json.dumps({"prompt": prompt}) + "\n", encoding="utf-8")
                run = bon.run_best_of_n(prompts_file, reward, adapter=policy or None, n=int(n),
                                        max_new_tokens=int(max_new_tokens), seed=0)
            stored = bon.store_as_items(ctx.db, project, run)
        except InputError as exc:
            return {tab.status: f"⚠️ {exc}", tab.verdict: gr.update(interactive=False)}
        result = run.results[0]
        ranked = sorted(range(len(result.candidates)), key=lambda i: -result.candidates[i].score)
        with_ids = _response_ids(ctx, stored.item_ids[0])
        state = {"item_id": stored.item_ids[0], "best_id": stored.best_response_ids[0], "ids": with_ids,
                 "ranked": ranked, "best_index": result.best_index}
        updates = {tab.state: state, tab.status: f"RM's pick: answer {result.best_index + 1} "
                                                 f"(stored as item {stored.item_ids[0]} in {project})."}
        for i, card in enumerate(tab.cards):
            if i < len(result.candidates):
                c = result.candidates[i]
                star = " ★ RM's pick" if i == result.best_index else ""
                updates[card] = gr.update(value=render_response(c.text, f"Answer {i + 1} · score {c.score:.3f}{star}"),
                                          visible=True)
            else:
                updates[card] = gr.update(value="", visible=False)
        updates[tab.pick] = gr.update(choices=[(f"Answer {i + 1}", i) for i in range(len(result.candidates))],
                                      value=None)
        updates[tab.verdict] = gr.update(interactive=len(result.candidates) > 1)
        return updates

    tab.run.click(sample, [tab.project, tab.reward, tab.policy, tab.prompt, tab.n, tab.max_new_tokens],
                  [tab.state, tab.status, *tab.cards, tab.pick, tab.verdict], api_name="best_of_n")

    def record(project, user, state, picked, request: gr.Request):
        # The verdict is a label: stored under the login's name (the typed one in local mode).
        user = caller(ctx, request, Permission.label, project, user).name
        try:
            if state is None:
                raise InputError("sample and score first")
            if picked is None:
                raise InputError("pick the answer you think is best")
            agree = picked == state["best_index"]
            # Compare the RM's pick with the annotator's pick, or with the runner-up when they agree.
            other = state["ranked"][1] if agree and len(state["ranked"]) > 1 else picked
            if other == state["best_index"]:
                raise InputError("a single candidate leaves nothing to compare")
            receipt = bon.record_rm_pick_verdict(ctx.db, project, user, state["item_id"], state["best_id"],
                                                 state["ids"][other], agree)
        except InputError as exc:
            return {tab.status: f"⚠️ {exc}"}
        said = "agrees with" if agree else "disagrees with"
        # One verdict per sample: the button waits for the next one.
        return {tab.status: f"✅ Verdict saved (label {receipt.label_ids[0]}): {user} {said} the reward model.",
                tab.state: None, tab.verdict: gr.update(interactive=False)}

    tab.verdict.click(record, [tab.project, tab.annotator, tab.state, tab.pick], [tab.status, tab.state, tab.verdict],
                      api_name="rm_verdict")


def _response_ids(ctx: UIContext, item_id: int) -> list[int]:
    from storage.db import transaction
    from storage.models import Item

    with transaction(ctx.db) as s:
        return [r.id for r in s.get(Item, item_id).responses]
