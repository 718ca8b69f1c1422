"""Training from the browser: launch DPO jobs on a tiny model, watch progress, cancel one, run
another to success, find the adapter with its lineage in the Models tab, and try it.

The tests share one server; each waits on the job ids its own launches report, and any job a test
leaves running or queued is cancelled after it, so no test depends on what another left behind."""
from __future__ import annotations

import json
import re
import shutil
import zipfile
from pathlib import Path

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from annotation.services import labelling
from storage.db import open_database, transaction
from storage.models import Job, JobStatus, PairwiseLabel, Response, TrainedModel, User
from tests.browser_support import (ServerProcess, browser_page, fill_number, goto_tab, pick_dropdown, wait_idle,
                                   wait_status)
from tests.factories import make_items, make_project

pytestmark = pytest.mark.browser


def labelled_project_server(folder: Path, *args: str) -> ServerProcess:
    """A server whose project 'prefs' has 12 pairwise items, each labelled (``proc.db`` opens its database)."""
    db = open_database(folder / "ui.db")
    make_project(db, "prefs")
    make_items(db, "prefs", 12)
    for i in range(12):
        labelling.submit_pairwise(db, labelling.next_item(db, "prefs", "ann"), "a" if i % 4 else "b")
    proc = ServerProcess(["--db", str(folder / "ui.db"), "--no-worker", "--no-seed", "--runs", str(folder / "runs"),
                          *args], folder / "server.log")
    proc.db = db
    return proc


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc = labelled_project_server(tmp_path_factory.mktemp("train-ui"))
    yield proc
    proc.stop()


@pytest.fixture
def page(server):
    cancel_active_jobs(server)
    with browser_page(server.url) as page:
        yield page
    cancel_active_jobs(server)


def cancel_active_jobs(server):
    """Cancel (through the app's API, as a script would) the jobs a test left running or queued."""
    from gradio_client import Client

    with transaction(server.db) as s:
        active = s.scalars(select(Job.id).where(Job.status.in_([JobStatus.running, JobStatus.queued]))).all()
    if active:
        client = Client(server.url, verbose=False)
        for job_id in active:
            client.predict(job_id, api_name="/cancel_job")


@pytest.fixture(scope="module")
def tiny_adapter(tiny_model_dir, tmp_path_factory):
    """A DPO adapter on the tiny model, trained here with a held-out split (for the best-of-N and
    evaluation tests, which need a policy adapter but not one another test trained)."""
    from alignment.training import DPOConfig, train_dpo

    from tests.test_training import FAST, pair_rows, write_jsonl

    folder = tmp_path_factory.mktemp("tiny-adapter")
    data = write_jsonl(folder / "pairs.jsonl", pair_rows(6))
    return train_dpo(DPOConfig(model=str(tiny_model_dir), data=str(data), out=str(folder / "dpo"), max_steps=1,
                               batch_size=2, eval_fraction=0.34, device="cpu", **FAST)).out_dir


def launch(page) -> int:
    """Click Train / Run and return the id of the job it queued, as the status line reports it (not
    the line an earlier launch left there)."""
    status = page.locator("#train-status")
    before = re.search(r"Job (\d+) queued", status.inner_text())
    page.click("#train-launch")
    if before:
        expect(status).not_to_contain_text(before.group(0), timeout=60_000)
    wait_status(page, r"Job \d+ queued", elem_id="train-status")
    return int(re.search(r"Job (\d+) queued", status.inner_text()).group(1))


def drawn_points(page, series: str) -> int:
    """How many points the job plot draws for a series (circles in its SVG panel)."""
    return page.locator(f"#job-plot svg[data-series='{series}'] circle").count()


def open_advanced(page, prefix: str) -> None:
    """Open a form's "Advanced settings" (closed at first) if it is not open yet."""
    accordion = page.locator(f"#{prefix}advanced")
    if not accordion.locator("input, textarea").first.is_visible():
        accordion.locator("button").first.click()
        expect(accordion.locator("input, textarea").first).to_be_visible()


def set_up_dpo(page, model_dir, max_steps, lr="0.001"):
    page.locator("#dpo-model textarea").fill(str(model_dir))
    page.locator("#dpo-max_steps textarea").fill(str(max_steps))  # optional: a textbox, empty = none
    open_advanced(page, "dpo-")
    fill_number(page, "dpo-batch_size", 2)
    fill_number(page, "dpo-max_length", 64)
    fill_number(page, "dpo-lora_r", 4)
    fill_number(page, "dpo-lr", lr)


def pick_dropdown_starting(page, elem_id: str, prefix: str) -> None:
    """Pick the option whose label starts with `prefix` (a job's label ends with its changing status)."""
    page.click(f"#{elem_id} input[role=combobox]")
    page.locator(f"#{elem_id} [role=option][aria-label^='{prefix}']").click()


def job_status(db, job_id):
    with transaction(db) as s:
        return s.get(Job, job_id).status


def test_launch_watch_cancel_succeed_and_find_the_adapter(page, server, tiny_model_dir):
    db = server.db
    goto_tab(page, "train")
    pick_dropdown(page, "train-project", "prefs")
    # Before any step the plot says so (it once drew empty axes reading "Infinity").
    expect(page.locator("#job-plot")).to_contain_text("appear here after the first training step")
    assert "Infinity" not in page.locator("#job-plot").inner_text()

    # Invalid hyperparameters are refused before anything is launched.
    with transaction(db) as s:
        jobs_before = len(s.scalars(select(Job)).all())
    set_up_dpo(page, tiny_model_dir, 3, lr="-1")
    page.click("#train-launch")
    wait_status(page, "Learning rate", elem_id="train-status")
    with transaction(db) as s:
        assert len(s.scalars(select(Job)).all()) == jobs_before

    # A long job: first the phase before training (with nothing counted yet), then steps.
    set_up_dpo(page, tiny_model_dir, 10_000)
    long_job = launch(page)
    expect(page.locator("#job-progress")).to_contain_text(f"job {long_job} · running · loading the model",
                                                          timeout=60_000)
    expect(page.locator("#job-progress")).to_contain_text(
        re.compile(rf"job {long_job} · running · step [1-9]\d*/10000"), timeout=120_000)

    # Launching another while it runs keeps the running job in view; the new one waits in the queue,
    # shown under the panel and in the table, each with its own progress.
    set_up_dpo(page, tiny_model_dir, 3)
    short_job = launch(page)
    expect(page.locator("#train-status")).to_contain_text(f"Job {long_job} is still running and stays in view")
    page.wait_for_timeout(3_000)  # a few polls: none may swap the view
    expect(page.locator("#job-progress")).to_contain_text(re.compile(rf"job {long_job} · running · step \d+/10000"))
    expect(page.locator("#job-select input[role=combobox]")).to_have_value(re.compile(rf"^{long_job} · "))
    expect(page.locator("#jobs-active")).to_contain_text(f"job {short_job} · queued · waiting for the device")
    queue = page.locator("#job-queue").inner_text()
    assert re.search(r"step \d+/10000", queue) and "waiting for the device" in queue
    assert drawn_points(page, "loss") >= 1
    # Only the actions the watched job can take look clickable (issue 12, item 9).
    expect(page.locator("#job-cancel")).to_be_enabled()
    expect(page.locator("#job-resume")).to_be_disabled()
    expect(page.locator("#job-download")).to_be_disabled()

    page.click("#job-cancel")
    wait_status(page, f"Job {long_job} cancelled", elem_id="train-status")
    assert job_status(db, long_job) == JobStatus.cancelled
    expect(page.locator("#job-progress")).to_contain_text("cancelled")
    expect(page.locator("#job-cancel")).to_be_disabled()
    expect(page.locator("#job-resume")).to_be_enabled()

    # Picking the short job shows it run to success; the pick holds while it runs and after.
    pick_dropdown_starting(page, "job-select", f"{short_job} · ")
    expect(page.locator("#job-progress")).to_contain_text(f"job {short_job} · succeeded · step 3/3", timeout=180_000)
    expect(page.locator("#job-queue")).to_contain_text("cancelled")
    expect(page.locator("#job-cancel")).to_be_disabled()
    expect(page.locator("#job-resume")).to_be_disabled()
    expect(page.locator("#job-download")).to_be_enabled()

    # The plot draws a point per logged step for the loss and the reward accuracy, joined by a line.
    expect(page.locator("#job-plot svg[data-series='loss'] circle")).to_have_count(3)
    assert drawn_points(page, "reward accuracy") == 3
    assert page.locator("#job-plot svg[data-series='loss'] polyline").get_attribute("points").count(",") == 3
    box = page.locator("#job-plot svg[data-series='loss']").bounding_box()
    assert box["width"] > 200 and box["height"] > 100
    page.locator("#job-plot").screenshot(path=str(Path(server.log_path).parent / "job-plot.png"))

    # The adapter folder downloads as a zip: the adapter and its config, no checkpoints.
    page.click("#job-download")
    wait_status(page, f"Output of job {short_job}", elem_id="train-status")
    with page.expect_download() as download:
        page.locator("#job-output a[download]").first.click()
    assert download.value.suggested_filename == f"job{short_job}-policy-adapter.zip"
    names = zipfile.ZipFile(download.value.path()).namelist()
    assert f"job{short_job}-policy-adapter/adapter_config.json" in names
    assert any(n.endswith("adapter_model.safetensors") for n in names)
    assert not any("checkpoint-" in n or "reference_logps" in n for n in names)

    # Reloading the page re-attaches: the queue comes back from the database and run folders.
    page.reload()
    goto_tab(page, "train")
    expect(page.locator("#job-queue")).to_contain_text("succeeded", timeout=20_000)

    name = f"dpo-job{short_job}"
    goto_tab(page, "models")
    expect(page.locator("#models-table")).to_contain_text(name, timeout=20_000)
    table = page.locator("#models-table").inner_text()
    assert "prefs" in table and "policy-adapter" in table and "all labels" in table
    with transaction(db) as s:
        model = s.scalars(select(TrainedModel).where(TrainedModel.job_id == short_job)).one()
        assert model.snapshot.counts["rows"] == 12
        assert json.loads((Path(model.path) / "adapter_config.json").read_text())["r"] == 4
        model_id = model.id
    pick_dropdown(page, "models-select", f"{model_id} · {name} (policy-adapter)")
    expect(page.locator("#models-lineage")).to_contain_text('"max_steps": 3')
    page.locator("#try-prompt textarea").fill("Say something nice.")
    page.click("#try-button")
    expect(page.locator("#try-answer textarea")).not_to_have_value("", timeout=60_000)

    # The progress file also counted the reference pass, as its own phase, before the first step.
    with transaction(db) as s:
        run_dir = Path(s.get(Job, short_job).run_dir)
    events = [json.loads(line) for line in (run_dir / "progress.jsonl").read_text().splitlines()]
    reference = [e for e in events if e.get("phase") == "reference pass"]
    assert reference and reference[-1]["done"] == reference[-1]["total"] > 0
    assert [e["event"] for e in events].index("train_begin") > events.index(reference[-1])


def register_model(db, name, kind, path, base_model):
    """A trained model in the Models list as if a job had made it (once per server)."""
    with transaction(db) as s:
        if not s.scalars(select(TrainedModel).where(TrainedModel.name == name)).all():
            s.add(TrainedModel(name=name, kind=kind, path=str(path), base_model=str(base_model), metrics={}))


def train_reward_model(page, model_dir) -> int:
    """Train a tiny reward model from the picked project's labels in the Train tab; its job id once it succeeded."""
    pick_dropdown(page, "train-method", "Reward model (Bradley-Terry, LoRA)")
    page.locator("#rm-model textarea").fill(str(model_dir))
    page.locator("#rm-max_steps textarea").fill("2")
    open_advanced(page, "rm-")
    for field, value in (("batch_size", 2), ("max_length", 64), ("lora_r", 4)):
        fill_number(page, f"rm-{field}", value)
    job_id = launch(page)  # launching a job puts it in view, whatever was shown before
    expect(page.locator("#job-progress")).to_contain_text(f"job {job_id} · succeeded", timeout=180_000)
    return job_id


def test_reward_model_then_best_of_n_with_a_verdict_label(page, server, tiny_model_dir, tiny_adapter):
    db = server.db
    register_model(db, "tiny-dpo", "policy-adapter", tiny_adapter, tiny_model_dir)
    goto_tab(page, "train")
    pick_dropdown(page, "train-project", "prefs")
    job_id = train_reward_model(page, tiny_model_dir)

    goto_tab(page, "bon")
    with transaction(db) as s:
        rm = s.scalars(select(TrainedModel).where(TrainedModel.job_id == job_id)).one()
    pick_dropdown(page, "bon-reward", f"{rm.name} (job {rm.job_id})")
    pick_dropdown(page, "bon-policy", "tiny-dpo (job None)")
    page.locator("#bon-prompt textarea").fill("Name a fruit.")
    fill_number(page, "bon-n", 2)  # the project is pairwise: items of two
    fill_number(page, "bon-max-new-tokens", 8)
    page.click("#bon-run")
    wait_status(page, r"RM's pick: answer [12]", elem_id="bon-status", timeout=120_000)
    assert "score" in page.locator("#bon-card-0").inner_text() and "RM's pick" in (
        page.locator("#bon-card-0").inner_text() + page.locator("#bon-card-1").inner_text())
    page.locator("#bon-annotator textarea").fill("judge")
    page.locator("#bon-pick label", has_text="Answer 1").click()
    page.click("#bon-verdict")
    wait_status(page, "Verdict saved", elem_id="bon-status")
    with transaction(db) as s:
        label = s.scalars(select(PairwiseLabel).join(PairwiseLabel.user).where(User.name == "judge")).one()
        a = s.get(Response, label.response_a_id)
        assert a.source == "best-of-n" and "rm_score" in a.sampling


def test_best_of_n_job_from_the_train_tab(page, server, tiny_model_dir, tiny_reward_dir):
    """A reward model (registered as if a job had trained it) picks the best of 2 for 3 of the project's
    prompts; the candidates become items of the pairwise project, the dataset downloads from the queue."""
    db = server.db
    register_model(db, "tiny-rm", "reward-model", tiny_reward_dir, tiny_model_dir)
    with transaction(db) as s:
        jobs_before = len(s.scalars(select(Job)).all())
        bon_before = len(s.scalars(select(Response).where(Response.source == "best-of-n")).all())

    goto_tab(page, "train")  # opening the tab refreshes the reward-model choices
    pick_dropdown(page, "train-method", "Best-of-N dataset (reward model picks the best of N)")
    pick_dropdown(page, "train-project", "prefs")
    expect(page.locator("#train-launch")).to_have_text("Run")
    pick_dropdown(page, "bon-job-reward", "tiny-rm (job None)")
    page.locator("#bon-job-model textarea").fill(str(tiny_model_dir))
    page.locator("#bon-job-max_prompts textarea").fill("3")
    open_advanced(page, "bon-job-")
    fill_number(page, "bon-job-max_new_tokens", 6)
    page.locator("#bon-job-store_as_items input[type=checkbox]").check()

    # Three candidates cannot be labelled in a pairwise project: refused before anything is queued.
    fill_number(page, "bon-job-n", 3)
    page.click("#train-launch")
    wait_status(page, "3 candidates, but pairwise project 'prefs' labels exactly 2", elem_id="train-status")
    with transaction(db) as s:
        assert len(s.scalars(select(Job)).all()) == jobs_before

    fill_number(page, "bon-job-n", 2)
    job_id = launch(page)
    expect(page.locator("#job-progress")).to_contain_text(f"job {job_id} · succeeded · prompt 3/3", timeout=180_000)
    expect(page.locator("#job-queue")).to_contain_text("3 prompts")
    expect(page.locator("#job-queue")).to_contain_text("best_of_n.jsonl")
    expect(page.locator("#job-log textarea")).to_have_value(re.compile(r"stored 3 items \(6 responses\)"))

    page.click("#job-download")
    with page.expect_download() as download:
        page.locator("#job-output a[download]").first.click()
    assert download.value.suggested_filename == f"job{job_id}-best_of_n.jsonl"
    rows = [json.loads(line) for line in Path(download.value.path()).read_text().splitlines()]
    assert len(rows) == 3 and all(len(r["completions"]) == len(r["scores"]) == 2 for r in rows)
    with transaction(db) as s:
        job = s.get(Job, job_id)
        assert job.status == JobStatus.succeeded and job.config["n"] == 2 and job.config["store_as_items"]
        added = len(s.scalars(select(Response).where(Response.source == "best-of-n")).all()) - bon_before
        assert added == 6


def test_eval_job_from_the_train_tab_shows_in_the_models_tab(page, server, tiny_model_dir, tiny_reward_dir,
                                                             tiny_adapter):
    """A tuned adapter (trained with a held-out split) is evaluated against its base by a reward
    model from the Train tab; the Models tab then lists the stored result and plots its win rate."""
    from storage.models import Evaluation

    db = server.db
    register_model(db, "tiny-dpo", "policy-adapter", tiny_adapter, tiny_model_dir)
    register_model(db, "tiny-rm", "reward-model", tiny_reward_dir, tiny_model_dir)

    goto_tab(page, "train")
    pick_dropdown(page, "train-method", "Evaluation: tuned vs base on held-out prompts (reward model as judge)")
    pick_dropdown(page, "train-project", "prefs")
    expect(page.locator("#train-launch")).to_have_text("Run")
    pick_dropdown(page, "eval-adapter", "tiny-dpo (job None)")
    pick_dropdown(page, "eval-reward", "tiny-rm (job None)")
    page.locator("#eval-model textarea").fill(str(tiny_model_dir))
    open_advanced(page, "eval-")
    fill_number(page, "eval-max_new_tokens", 6)
    job_id = launch(page)
    expect(page.locator("#job-progress")).to_contain_text(f"job {job_id} · succeeded · prompt 2/2", timeout=180_000)

    with transaction(db) as s:
        evaluation = s.scalars(select(Evaluation).where(Evaluation.job_id == job_id)).one()
        win_rate = evaluation.metrics["win_rate"]
    goto_tab(page, "models")
    table = page.locator("#evaluations-table")
    expect(table).to_contain_text("tiny-dpo")
    expect(table).to_contain_text(f"{win_rate:.0%}")
    # The adapter held out Questions 1 and 2, which the reward model trained on: the table says so,
    # and the RM's agreement with people is left unmeasured rather than measured on its training data.
    expect(table).to_contain_text("RM trained on held-out prompts")
    expect(table.locator("td").filter(has_text=re.compile(r"^\s*none \(2 left out: RM trained on them\)\s*$"))) \
        .to_have_count(1)
    expect(page.locator("#evaluations-plot")).to_be_visible()


def test_the_form_refuses_a_fractional_epoch_and_modules_the_model_lacks(page, server, tiny_model_dir):
    """Issue 12, item 18: 1.5 epochs is refused, not rounded to 2; LoRA targets are checked at launch
    against the model, and the refusal lists the modules it has. No job is queued."""
    with transaction(server.db) as s:
        jobs_before = len(s.scalars(select(Job)).all())
    goto_tab(page, "train")
    pick_dropdown(page, "train-project", "prefs")
    set_up_dpo(page, tiny_model_dir, 3)
    fill_number(page, "dpo-epochs", "1.5")
    page.click("#train-launch")
    wait_status(page, "Epochs must be a whole number, not 1.5", elem_id="train-status")

    fill_number(page, "dpo-epochs", 1)
    page.locator("#dpo-target_modules textarea").fill("q_proj, c_attn")
    page.click("#train-launch")
    wait_status(page, "LoRA target module\\(s\\) c_attn not found", elem_id="train-status")
    assert "its linear layers are: down_proj, gate_proj, k_proj" in page.locator("#train-status").inner_text()
    with transaction(server.db) as s:
        assert len(s.scalars(select(Job)).all()) == jobs_before


def test_a_missing_model_is_refused_and_a_failed_job_says_why(page, server, tiny_model_dir, tmp_path):
    db = server.db
    goto_tab(page, "train")
    pick_dropdown(page, "train-project", "prefs")
    with transaction(db) as s:
        jobs_before = len(s.scalars(select(Job)).all())

    # A model that is nowhere on this machine is refused at launch, not after a minute of loading.
    set_up_dpo(page, "no/such-model", 3)
    page.click("#train-launch")
    wait_status(page, "'no/such-model' is not a file or folder on this machine", elem_id="train-status")
    with transaction(db) as s:
        assert len(s.scalars(select(Job)).all()) == jobs_before

    # A model folder that exists but cannot be loaded fails in the job: its one-line reason shows in
    # the table and next to the job, not only inside a traceback in the log.
    broken = tmp_path / "broken-model"  # its config and tokenizer pass the checks at launch; no weights
    broken.mkdir()
    for kept in Path(tiny_model_dir).iterdir():
        if kept.name == "config.json" or kept.name.startswith(("tokenizer", "special_tokens", "vocab", "merges")):
            shutil.copy(kept, broken / kept.name)
    set_up_dpo(page, broken, 3)
    job_id = launch(page)
    expect(page.locator("#job-progress")).to_contain_text(f"job {job_id} · failed", timeout=120_000)
    reason = page.locator("#job-progress .ps-job-reason").inner_text()
    assert re.match(r"\w+(Error|Exception): \S", reason) and "Traceback" not in reason and "\n" not in reason
    row = page.locator("#job-queue tr", has_text=f"failed: {reason[:40]}")
    expect(row).to_have_count(1)
    expect(page.locator("#job-log textarea")).to_have_value(re.compile("Traceback"))
    expect(page.locator("#job-cancel")).to_be_disabled()
    expect(page.locator("#job-resume")).to_be_enabled()
    expect(page.locator("#job-download")).to_be_disabled()


def test_train_form_puts_the_usual_settings_first_keeps_values_per_method_and_words_errors(page, server):
    goto_tab(page, "train")
    pick_dropdown(page, "train-project", "prefs")
    # The usual settings are open, the rest folded away: the page is no longer 4,300 px of fields.
    expect(page.locator("#dpo-lr input[type=number]")).to_be_visible()
    expect(page.locator("#dpo-beta input[type=number]")).to_be_visible()
    assert not page.locator("#dpo-lora_alpha input[type=number]").is_visible()
    form = page.locator("#dpo-form").first.bounding_box()["height"]
    height = page.evaluate("() => document.documentElement.scrollHeight")
    page.screenshot(path=str(Path(server.log_path).parent / "train-form.png"), full_page=True)
    assert form < 800 and height < 2_500, f"the DPO form is {form} px tall, the Train tab {height} px"

    # Values typed for one method are still there after looking at another.
    fill_number(page, "dpo-lr", "0.0007")
    page.locator("#dpo-max_steps textarea").fill("5")
    pick_dropdown(page, "train-method", "Reward model (Bradley-Terry, LoRA)")
    expect(page.locator("#rm-lr input[type=number]")).to_be_visible()
    pick_dropdown(page, "train-method", "DPO (LoRA)")
    expect(page.locator("#dpo-lr input[type=number]")).to_have_value("0.0007")
    expect(page.locator("#dpo-max_steps textarea")).to_have_value("5")

    # Errors name what the user sees, not the code's field names or None.
    # The method change's reply (it re-shows the DPO form) must land before the field is emptied,
    # or a slow reply can race the typing (CI once launched a job here under load).
    wait_idle(page)
    open_advanced(page, "dpo-")
    page.locator("#dpo-batch_size input[type=number]").fill("")
    page.locator("#dpo-batch_size input[type=number]").press("Tab")
    wait_idle(page)
    expect(page.locator("#dpo-batch_size input[type=number]")).to_have_value("")
    page.click("#train-launch")
    wait_status(page, "Batch size", elem_id="train-status")
    message = page.locator("#train-status").inner_text()
    assert "batch_size" not in message and "None" not in message
    fill_number(page, "dpo-batch_size", 2)
    fill_number(page, "dpo-lora_r", 0)
    page.click("#train-launch")
    wait_status(page, "LoRA rank", elem_id="train-status")
    assert "lora_r" not in page.locator("#train-status").inner_text()


def test_a_two_process_dpo_job_from_the_form_succeeds_and_registers_its_model(page, server, tiny_model_dir):
    """Issue 10: the form's "Processes" setting launches the job under accelerate (2 CPU processes)."""
    goto_tab(page, "train")
    pick_dropdown(page, "train-project", "prefs")
    set_up_dpo(page, tiny_model_dir, 2)
    fill_number(page, "dpo-processes", 2)
    job_id = launch(page)
    expect(page.locator("#job-progress")).to_contain_text(f"job {job_id} · succeeded · step 2/2", timeout=400_000)
    with transaction(server.db) as s:
        job = s.get(Job, job_id)
        model = s.scalars(select(TrainedModel).where(TrainedModel.job_id == job_id)).one()
        assert job.config["processes"] == 2 and model.snapshot_id == job.snapshot_id
    assert json.loads((Path(model.path) / "metrics.json").read_text())["processes"] == 2
