"""The UI's pure helpers: safe rendering, dataclass-generated forms, zipped `datasets` uploads."""
from __future__ import annotations

import re
import zipfile

import pytest

from annotation.render import markdown_to_safe_html, render_messages, render_response
from annotation.services.projects import ProjectSettings
from annotation.ui.forms import fill_form, read_form
from annotation.services.data import LOCAL_FILE_LIMITS, _unzipped
from annotation.ui.projects import _failure_report
from storage.errors import InputError


@pytest.mark.parametrize("payload", [
    '<script>alert(1)</script>', '<img src=x onerror="alert(1)">', '<a href="javascript:alert(1)">x</a>',
    '<iframe src="https://example.com"></iframe>', '<svg onload=alert(1)>',
])
def test_raw_html_in_untrusted_text_comes_out_escaped(payload):
    html = markdown_to_safe_html(f"before {payload} after")
    assert "<script" not in html and "<img" not in html and "<iframe" not in html and "<svg" not in html
    assert "&lt;" in html


def test_markdown_still_renders_and_dangerous_links_are_dropped():
    html = markdown_to_safe_html("**bold** `code <b>` [ok](https://example.org) [bad](javascript:alert(1))")
    assert "<strong>bold</strong>" in html and "<code>code &lt;b&gt;</code>" in html
    assert 'href="https://example.org"' in html and 'href="javascript' not in html


def test_chat_prompts_render_each_turn_with_escaped_roles():
    html = render_messages([{"role": "user", "content": "hi <b>"}, {"role": "assistant", "content": "yo"},
                            {"role": "user", "content": "more"}], is_chat=True)
    assert html.count('class="ps-turn') == 3 and "&lt;b&gt;" in html
    assert "A &lt;x&gt;" in render_response("text", "A <x>")


def test_form_round_trip_coerces_numbers():
    settings = ProjectSettings(name="p", mode="listwise", k=4, temperature=0.5)
    values = dict(zip([f for f in ProjectSettings.__dataclass_fields__], fill_form(settings)))
    values["k"], values["temperature"] = 4.0, "0.5"  # what a browser form hands back
    again = read_form(ProjectSettings, values)
    assert again == settings and isinstance(again.k, int) and isinstance(again.temperature, float)


def test_zipped_datasets_folder_is_unpacked(tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "data-00000-of-00001.arrow").write_bytes(b"x")
    archive = tmp_path / "ds.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(folder / "data-00000-of-00001.arrow", "ds/data-00000-of-00001.arrow")
    with _unzipped(archive, LOCAL_FILE_LIMITS) as unpacked:
        assert unpacked.name == "ds" and (unpacked / "data-00000-of-00001.arrow").read_bytes() == b"x"
    assert not unpacked.exists()  # a temporary copy, removed after the import


def test_zip_with_an_escaping_path_is_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("../../outside.txt", "x")
    with pytest.raises(InputError, match="unsafe path"):
        with _unzipped(archive, LOCAL_FILE_LIMITS):
            pass
    assert not (tmp_path.parent / "outside.txt").exists()


def test_failure_report_lists_every_line_up_to_fifty():
    report = _failure_report(InputError("\n".join(f"line {i}: bad" for i in range(1, 61))))
    assert "Nothing was imported" in report and "line 50: bad" in report and "10 more" in report


def test_job_plot_draws_a_point_per_logged_step_and_no_infinite_axes():
    from annotation.ui.job_plot import plot_html

    empty = plot_html([])
    assert "Infinity" not in empty and "<svg" not in empty and "after the first training step" in empty
    events = [{"event": "phase", "phase": "loading the model"},
              *({"event": "step", "step": i, "loss": 0.6931 - i * 1e-4, "metrics": {"rewards/accuracies": i / 4}}
                for i in range(1, 5)),
              {"event": "eval", "step": 4, "loss": 0.5, "metrics": {}}]
    html = plot_html(events)
    assert html.count("<circle") == 8 and html.count("<polyline") == 2
    assert "Infinity" not in html and "NaN" not in html
    loss_panel = html.split('data-series="reward accuracy"')[0]
    ticks = re.findall(r'text-anchor="end"[^>]*>([^<]+)<', loss_panel)
    assert len(set(ticks)) == 5, ticks  # a loss that moves in the 4th digit still gets distinct ticks


def test_form_errors_name_labels_not_fields():
    from alignment.training.config import DPOConfig
    from annotation.ui.forms import form_values, readable_error

    with pytest.raises(ValueError, match="^Batch size is empty: enter a whole number$"):
        form_values(DPOConfig, {"batch_size": None})
    with pytest.raises(ValueError, match="^Epochs must be a whole number, not 1.5$"):
        form_values(DPOConfig, {"epochs": 1.5})
    assert readable_error(DPOConfig, "invalid dpo settings: lr must be a finite number > 0, got -1.0") == \
        "'Learning rate' must be a number above 0 (you entered -1.0)"
    assert readable_error(DPOConfig, "batch_size must be an integer >= 1, got None") == \
        "'Batch size' must be a whole number of at least 1 (it was left empty)"
    assert "lora_r" not in readable_error(DPOConfig, "lora_r must be an integer >= 1, got 0")


def test_a_poll_never_changes_which_job_is_picked(db, tmp_path):
    """The selector race of issue 12 (items 2, 20): a poll sent while job 2 was picked must not put
    job 2 back after a launch or the user picked another one; only the choices are refreshed."""
    import gradio as gr

    from annotation.ui.context import UIContext
    from annotation.ui.train import build_train_tab, poll

    ctx = UIContext(db=db, jobs=None, default_model="default")
    with gr.Blocks():
        tab = build_train_tab(ctx)
    update = poll(ctx, tab, 2)[tab.job]
    assert "choices" in update and "value" not in update


def test_a_model_folder_downloads_as_a_zip_without_checkpoints(tmp_path):
    from annotation.ui.train import zip_folder

    out = tmp_path / "output"
    (out / "checkpoint-2").mkdir(parents=True)
    (out / "checkpoint-2" / "optimizer.pt").write_bytes(b"x" * 100)
    (out / "adapter_config.json").write_text("{}")
    (out / "adapter_model.safetensors").write_bytes(b"weights")
    (out / "reference_logps.pt").write_bytes(b"cache")
    archive = zip_folder(out, tmp_path / "job3-policy-adapter.zip")
    assert sorted(zipfile.ZipFile(archive).namelist()) == ["job3-policy-adapter/adapter_config.json",
                                                          "job3-policy-adapter/adapter_model.safetensors"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no partial file left


def test_a_new_config_class_gets_its_form_with_no_ui_code():
    """How the PPO/GRPO forms will appear: fields marked basic come first, the rest under Advanced,
    a field with choices is a dropdown."""
    from dataclasses import dataclass, field

    import gradio as gr

    from annotation.ui.forms import build_form

    @dataclass
    class NewMethod:
        group_size: int = field(default=4, metadata={"help": "Samples per prompt.", "basic": True})
        kl_estimator: str = field(default="k3", metadata={"help": "KL estimator.", "choices": ["k1", "k3"]})
        clip: float = 0.2

    with gr.Blocks():
        form = build_form(NewMethod, prefix="new-", basic=())
    assert list(form) == ["group_size", "kl_estimator", "clip"]
    assert isinstance(form["kl_estimator"], gr.Dropdown) and isinstance(form["group_size"], gr.Number)

    def accordion(component):
        block = component.parent
        while block is not None and not isinstance(block, gr.Accordion):
            block = block.parent
        return block

    assert accordion(form["clip"]).elem_id == "new-advanced" and accordion(form["kl_estimator"]) is not None
    assert accordion(form["group_size"]) is None


def test_cancel_resume_and_download_are_clickable_only_when_the_job_can_take_them(db):
    import gradio as gr

    from annotation.ui.context import UIContext
    from annotation.ui.train import action_buttons, build_train_tab

    ctx = UIContext(db=db, jobs=None, default_model="default")
    with gr.Blocks():
        tab = build_train_tab(ctx)

    def clickable(row):
        buttons = action_buttons(tab, row)
        return [buttons[b]["interactive"] for b in (tab.cancel, tab.resume, tab.download)]

    assert clickable(None) == [False, False, False]
    assert clickable({"status": "queued", "output": None}) == [True, False, False]
    assert clickable({"status": "running", "output": None}) == [True, False, False]
    assert clickable({"status": "interrupted", "output": None}) == [False, True, False]
    assert clickable({"status": "failed", "output": None}) == [False, True, False]
    assert clickable({"status": "cancelled", "output": None}) == [False, True, False]
    assert clickable({"status": "succeeded", "output": "/runs/1/adapter"}) == [False, False, True]


def test_the_queue_table_cuts_a_long_failure_reason():
    from annotation.ui.train import TABLE_REASON_CHARS, _queue_table

    reason = "OSError: " + "x" * 300
    row = {"id": 1, "kind": "dpo", "status": "failed", "reason": reason, "output": None, "step": 0, "total_steps": 3}
    status = _queue_table([row])[0][2]
    assert status.startswith("failed: OSError: xxx") and status.endswith("…")
    assert len(status) == len("failed: ") + TABLE_REASON_CHARS
    short = {**row, "reason": "ValueError: no weights"}
    assert _queue_table([short])[0][2] == "failed: ValueError: no weights"
