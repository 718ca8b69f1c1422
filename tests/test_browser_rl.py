"""GRPO from the browser: a reward model trained in the app, then a GRPO job on the project's prompts
judged by it; the reward curve and the rollout table fill in while the job runs, and the adapter it
makes is listed in the Models tab and answers in the Compare tab."""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from alignment.rl.trainer import latest_round
from storage.db import transaction
from storage.models import Job, TrainedModel
from tests.browser_support import browser_page, fill_number, goto_tab, pick_dropdown, wait_status
from tests.test_browser_train import drawn_points, labelled_project_server, launch, open_advanced, train_reward_model

pytestmark = pytest.mark.browser

GRPO_STEPS = 12


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir):
    proc = labelled_project_server(tmp_path_factory.mktemp("rl-ui"), "--model", str(tiny_model_dir))
    yield proc
    proc.stop()


@pytest.fixture
def page(server):
    with browser_page(server.url) as page:
        yield page


def rollout_rows(page) -> list[list[str]]:
    """The rollout table as the page shows it: one list of cell texts per row."""
    rows = page.locator("#job-rollouts tbody tr")
    return [[cell.strip() for cell in rows.nth(i).locator("td").all_inner_texts()] for i in range(rows.count())]


def test_grpo_with_an_in_app_reward_model_from_the_train_tab(page, server, tiny_model_dir, tmp_path):
    db = server.db
    goto_tab(page, "train")
    pick_dropdown(page, "train-project", "prefs")

    rm_job = train_reward_model(page, tiny_model_dir)  # 1. a reward model from the project's labels

    # 2. GRPO judged by it: the form names its batch in prompts and K, and lists the reward model.
    pick_dropdown(page, "train-method", "GRPO: K answers per prompt, each judged against the others (LoRA)")
    expect(page.locator("#grpo-batch_size")).to_contain_text("Prompts per step (batch size)")
    expect(page.locator("#grpo-num_generations")).to_contain_text("Completions per prompt (K)")
    pick_dropdown(page, "grpo-reward_model", f"rm-job{rm_job} (job {rm_job})")
    page.locator("#grpo-model textarea").fill(str(tiny_model_dir))
    page.locator("#grpo-max_steps textarea").fill(str(GRPO_STEPS))
    fill_number(page, "grpo-batch_size", 2)
    fill_number(page, "grpo-num_generations", 4)
    open_advanced(page, "grpo-")
    for field, value in (("max_new_tokens", 8), ("max_length", 64), ("lora_r", 4), ("eval_fraction", 0)):
        fill_number(page, f"grpo-{field}", value)
    job_id = launch(page)

    # 3. While it runs: the reward curve gains points and the rollout table shows each new round.
    seen_points, seen_tables = set(), set()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        progress = page.locator("#job-progress").inner_text()
        if f"job {job_id} · succeeded" in progress or "failed" in progress:
            break
        if f"job {job_id} · running · step" in progress:
            seen_points.add(drawn_points(page, "mean reward"))
            rows = rollout_rows(page)
            if rows:
                seen_tables.add(tuple(map(tuple, rows)))
        page.wait_for_timeout(300)
    expect(page.locator("#job-progress")).to_contain_text(f"job {job_id} · succeeded · step {GRPO_STEPS}/{GRPO_STEPS}",
                                                          timeout=10_000)
    running_counts = seen_points - {0}
    assert any(0 < n < GRPO_STEPS for n in running_counts) and len(running_counts) >= 2, seen_points
    assert len(seen_tables) >= 2, "the rollout table never changed while the job ran"
    expect(page.locator("#job-plot svg[data-series='mean reward'] circle")).to_have_count(GRPO_STEPS)
    box = page.locator("#job-plot svg[data-series='mean reward']").bounding_box()
    assert box["width"] > 200 and box["height"] > 100

    # The finished table is the last round of the rollout log: 2 prompts x 4 answers, each group's
    # advantages centred on 0 (the reward model scores every answer differently).
    with transaction(db) as s:
        out = Path(s.get(Job, job_id).config["out"])
    logged = latest_round(out)
    expect(page.locator("#job-rollouts tbody tr")).to_have_count(8)
    shown = rollout_rows(page)
    assert [row[2] for row in shown] == [f"{r['reward']:.3f}" for r in logged]
    assert [row[3] for row in shown] == [f"{r['advantage']:+.3f}" for r in logged]
    for group in (shown[:4], shown[4:]):
        advantages = [float(row[3]) for row in group]
        assert abs(sum(advantages)) < 0.01 and max(advantages) > 0 > min(advantages)
    page.locator("#job-plot").screenshot(path=str(Path(server.log_path).parent / "grpo-plot.png"))
    page.locator("#job-rollouts").screenshot(path=str(Path(server.log_path).parent / "grpo-rollouts.png"))

    # 4. The adapter: in the Models tab with its lineage, and answering in the Compare tab.
    name = f"grpo-job{job_id}"
    goto_tab(page, "models")
    expect(page.locator("#models-table")).to_contain_text(name, timeout=20_000)
    with transaction(db) as s:
        model = s.scalars(select(TrainedModel).where(TrainedModel.job_id == job_id)).one()
        assert model.kind == "policy-adapter" and s.get(Job, job_id).config["reward_model"]
    goto_tab(page, "compare")
    expect(page.locator("#cmp-models")).to_contain_text(name)  # picked with the base when the tab opens
    page.click("#arena-model-1 input[role=combobox]")
    expect(page.locator(f"#arena-model-1 [role=option][aria-label='{name}']")).to_have_count(1)
    page.keyboard.press("Escape")
    fill_number(page, "cmp-max-new-tokens", 8)
    page.locator("#cmp-prompt textarea").fill("Name a fruit.")
    page.click("#cmp-run")
    wait_status(page, "2 answers", elem_id="cmp-status", timeout=120_000)
    tuned = page.locator("#cmp-col-0, #cmp-col-1").filter(has_text=name)
    expect(tuned).to_contain_text(re.compile(r"\d+ tokens"))
