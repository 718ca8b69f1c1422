"""The UI's pure helpers: safe rendering, dataclass-generated forms, zipped `datasets` uploads."""
from __future__ import annotations

import zipfile

import pytest

from annotation.render import markdown_to_safe_html, render_messages, render_response
from annotation.services.projects import ProjectSettings
from annotation.ui.forms import fill_form, read_form
from annotation.services.data import _unzipped
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
    with _unzipped(archive) as unpacked:
        assert unpacked.name == "ds" and (unpacked / "data-00000-of-00001.arrow").read_bytes() == b"x"
    assert not unpacked.exists()  # a temporary copy, removed after the import


def test_zip_with_an_escaping_path_is_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("../../outside.txt", "x")
    with pytest.raises(InputError, match="unsafe path"):
        with _unzipped(archive):
            pass
    assert not (tmp_path.parent / "outside.txt").exists()


def test_failure_report_lists_every_line_up_to_fifty():
    report = _failure_report(InputError("\n".join(f"line {i}: bad" for i in range(1, 61))))
    assert "Nothing was imported" in report and "line 50: bad" in report and "10 more" in report
