"""Issue 11's exposures of files and disk, reproduced and shown closed: a `datasets` upload whose
state.json points outside it, path probes that told which server paths exist, uploads and zips
without a size cap. Real files, a real SQLite file, and a real server over HTTP where the exposure
was an HTTP one."""
from __future__ import annotations

import json
import time
import os
import zipfile
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from annotation.jobs.runner import JobRequest, JobRunner
from annotation.services import data, paths
from annotation.services.data import UploadLimits, import_file
from annotation.services.projects import ProjectSettings, create_project
from storage.db import transaction
from storage.errors import InputError
from storage.models import Job, Prompt
from tests.browser_support import ServerProcess
from tests.factories import make_project

SECRET = "the server's private text"


def count(db, model) -> int:
    with transaction(db) as s:
        return s.scalar(select(func.count()).select_from(model))


def save_dataset(folder: Path, prompts: list[str]) -> Path:
    import datasets

    datasets.Dataset.from_list([{"prompt": p} for p in prompts]).save_to_disk(str(folder))
    return folder


def zip_folder(folder: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w") as archive:
        for file in sorted(folder.rglob("*")):
            archive.write(file, f"{folder.name}/{file.relative_to(folder)}")
    return target


@pytest.fixture
def outside_shard(tmp_path) -> Path:
    """An Arrow file of the server's, outside any upload (the file the exploit read)."""
    folder = save_dataset(tmp_path / "server-files", [SECRET])
    return next(folder.glob("*.arrow"))


def point_state_at(folder: Path, filename: str) -> None:
    state = json.loads((folder / "state.json").read_text())
    state["_data_files"] = [{"filename": filename}]
    (folder / "state.json").write_text(json.dumps(state))


# --------------------------------------------------------------------------------------------------
# datasets imports: every path they list stays inside the upload
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["absolute", "dotdot"])
def test_a_datasets_zip_whose_state_json_points_outside_is_refused_and_imports_nothing(db, tmp_path, outside_shard,
                                                                                      how):
    make_project(db, "p")
    upload = save_dataset(tmp_path / "upload" / "ds", ["an honest prompt"])
    # Unzipped, the folder sits in a temporary folder: climb out of it to the server's file.
    filename = str(outside_shard) if how == "absolute" else "../../../../../../../.." + str(outside_shard)
    point_state_at(upload, filename)
    archive = zip_folder(upload, tmp_path / "ds.zip")
    with pytest.raises(InputError) as caught:
        import_file(db, archive, "p", limits=UploadLimits())
    assert "not a file of this dataset folder" in str(caught.value) or "outside the dataset folder" in str(caught.value)
    assert SECRET not in str(caught.value)
    assert count(db, Prompt) == 0


def test_a_datasets_folder_with_a_symlinked_shard_pointing_out_is_refused(db, tmp_path, outside_shard):
    make_project(db, "p")
    upload = save_dataset(tmp_path / "ds", ["an honest prompt"])
    shard = next(upload.glob("*.arrow"))
    shard.unlink()
    shard.symlink_to(outside_shard)
    with pytest.raises(InputError, match="points outside the dataset folder"):
        import_file(db, upload, "p")
    assert count(db, Prompt) == 0


def test_a_dataset_dict_naming_a_split_outside_is_refused(db, tmp_path, outside_shard):
    make_project(db, "p")
    folder = tmp_path / "dd"
    folder.mkdir()
    (folder / "dataset_dict.json").write_text(json.dumps({"splits": ["../server-files"]}))
    with pytest.raises(InputError, match="not a file of this dataset folder"):
        import_file(db, folder, "p")
    assert count(db, Prompt) == 0


def test_a_shard_that_is_not_a_regular_file_is_refused(db, tmp_path):
    make_project(db, "p")
    upload = save_dataset(tmp_path / "ds", ["an honest prompt"])
    point_state_at(upload, "sub")
    (upload / "sub").mkdir()
    with pytest.raises(InputError, match="not a regular file"):
        import_file(db, upload, "p")
    assert count(db, Prompt) == 0


def test_an_honest_datasets_zip_still_imports(db, tmp_path):
    make_project(db, "p")
    archive = zip_folder(save_dataset(tmp_path / "ds", ["first prompt", "second prompt"]), tmp_path / "ds.zip")
    assert import_file(db, archive, "p", limits=UploadLimits()).prompts_added == 2


# --------------------------------------------------------------------------------------------------
# Upload caps
# --------------------------------------------------------------------------------------------------

def bomb(target: Path, megabytes: int) -> Path:
    """A zip of one JSONL file of `megabytes` MiB of spaces: about a thousandth of that on disk."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        with archive.open("prompts.jsonl", "w", force_zip64=True) as f:
            block = b" " * (1 << 20)
            for _ in range(megabytes):
                f.write(block)
    return target


def test_a_zip_bomb_is_refused_before_it_is_unpacked(db, tmp_path, monkeypatch):
    make_project(db, "p")
    archive = bomb(tmp_path / "bomb.zip", 200)
    assert archive.stat().st_size < 400_000  # ~200 KB expanding to 200 MiB, as in the issue
    unpacked = []
    monkeypatch.setattr(data, "_extract", lambda *args: unpacked.append(args))  # must never be reached
    with pytest.raises(InputError, match=r"unpacks to 200 MiB from \d+ KiB, more than 100 times its size"):
        import_file(db, archive, "p", limits=UploadLimits())  # the defaults
    small = UploadLimits(max_unzipped_bytes=100 << 20)
    with pytest.raises(InputError, match=r"unpacks to 200 MiB, over this server's limit of 100 MiB; nothing was imported"):
        import_file(db, archive, "p", limits=small)
    assert unpacked == [] and count(db, Prompt) == 0


def test_unpacking_is_counted_so_a_header_that_lies_is_stopped_at_the_cap(tmp_path):
    archive = bomb(tmp_path / "bomb.zip", 8)
    with zipfile.ZipFile(archive) as z, pytest.raises(InputError, match="more than this server's limit of 4 MiB"):
        data._extract(archive, z, z.infolist(), tmp_path / "out", 4 << 20)
    written = sum(f.stat().st_size for f in (tmp_path / "out").rglob("*") if f.is_file())
    assert written <= 4 << 20


def test_an_upload_over_the_cap_is_refused_and_the_defaults_are_sensible(db, tmp_path):
    make_project(db, "p")
    big = tmp_path / "big.jsonl"
    big.write_text(json.dumps({"prompt": "x" * 1000}) + "\n" * (2 << 20))
    with pytest.raises(InputError, match=r"over this server's upload limit of 1 MiB; nothing was imported"):
        import_file(db, big, "p", limits=UploadLimits(max_upload_bytes=1 << 20))
    assert count(db, Prompt) == 0
    assert UploadLimits() == UploadLimits(max_upload_bytes=200 << 20, max_unzipped_bytes=2 << 30)


def test_the_server_refuses_an_oversized_upload_over_http(tmp_path):
    """`serve --max-upload-mb 1`: Gradio's upload route answers 413 and keeps nothing of the file."""
    server = ServerProcess(["--db", str(tmp_path / "ui.db"), "--no-worker", "--no-seed", "--max-upload-mb", "1"],
                           tmp_path / "server.log")
    try:
        files = {"files": ("big.jsonl", b"{}\n" * (700_000), "application/octet-stream")}  # 2.1 MB
        refused = httpx.post(f"{server.url}gradio_api/upload", files=files, timeout=60)
        assert refused.status_code == 413, refused.text
        assert "maximum allowed size" in refused.text
        accepted = httpx.post(f"{server.url}gradio_api/upload",
                              files={"files": ("small.jsonl", b'{"prompt": "hi"}\n', "application/octet-stream")},
                              timeout=60)
        assert accepted.status_code == 200, accepted.text
    finally:
        server.stop()


# --------------------------------------------------------------------------------------------------
# Path probes: the same message whether a server path exists or not
# --------------------------------------------------------------------------------------------------

@pytest.fixture
def probes(tmp_path) -> list[str]:
    not_a_model = tmp_path / "notes.txt"
    not_a_model.write_text("hello")
    fake_gguf = tmp_path / "weights.gguf"
    fake_gguf.write_text("not gguf")
    return ["/etc", "~/.ssh", "/nonexistent", "/etc/passwd", str(not_a_model), str(tmp_path), str(fake_gguf),
            "/nonexistent/model.gguf"]


def same_message(messages: dict[str, str]) -> set[str]:
    """The messages with the probed path itself (echoed back as typed) taken out."""
    return {message.replace(repr(probe), "<path>").replace(probe, "<path>") for probe, message in messages.items()}


@pytest.mark.parametrize("check", [paths.check_model, paths.check_adapter, paths.check_reward_model])
def test_every_path_check_answers_a_probe_with_one_message(check, probes):
    messages = {}
    for probe in probes:
        with pytest.raises(InputError) as caught:
            check(probe)
        messages[probe] = str(caught.value)
    assert len(same_message(messages)) == 1, messages


def test_a_real_model_folder_still_gets_a_precise_reason(tiny_model_dir, tiny_reward_dir):
    paths.check_model(str(tiny_model_dir))  # accepted
    with pytest.raises(InputError, match="is a base model folder, which cannot be used as the adapter"):
        paths.check_adapter(str(tiny_model_dir))
    with pytest.raises(InputError, match="is a reward model"):
        paths.check_adapter(str(tiny_reward_dir))
    assert paths.check_reward_model(str(tiny_reward_dir)) == Path(tiny_reward_dir)


def test_project_and_job_fields_answer_probes_alike(db, tmp_path, probes, tiny_model_dir):
    make_project(db, "p", prompts=2)
    runner = JobRunner(db, tmp_path / "runs")
    for field, settings in [("model", {}), ("judge_model", {}),
                            ("queue_reward_model", {"queue_order": "uncertainty"})]:
        messages = {}
        for probe in probes:
            with pytest.raises(InputError) as caught:
                create_project(db, ProjectSettings(name=f"probe-{field}", **{**settings, field: probe}))
            messages[probe] = str(caught.value)
        assert len(same_message(messages)) == 1, messages
    for field, kind in [("model", "dpo"), ("reward", "bon")]:
        messages = {}
        for probe in probes:
            with pytest.raises(InputError) as caught:
                runner.submit(JobRequest(kind, "p", {"model": str(tiny_model_dir), field: probe}))
            messages[probe] = str(caught.value)
        assert len(same_message(messages)) == 1, messages
    assert count(db, Job) == 0


def test_a_path_probe_over_http_gets_identical_answers(tmp_path, probes):
    """The exposure as reported: the judge-model (and model) field of the real server's
    create_project endpoint accepted /etc and ~/.ssh and refused /nonexistent."""
    from gradio_client import Client

    server = ServerProcess(["--db", str(tmp_path / "ui.db"), "--no-worker", "--no-seed"], tmp_path / "server.log")
    try:
        client = Client(server.url, verbose=False)
        defaults = ProjectSettings(name="")
        for field in ("judge_model", "model"):
            messages = {}
            for n, probe in enumerate(probes):
                values = {**vars(defaults), "name": f"probe{n}", field: probe, "queue_reward_model": ""}
                report, _ = client.predict(*values.values(), api_name="/create_project")
                messages[probe] = report
            assert len(same_message(messages)) == 1, messages
            assert "is not a model this server can use" in next(iter(messages.values()))
    finally:
        server.stop()


# --------------------------------------------------------------------------------------------------
# Export temp files
# --------------------------------------------------------------------------------------------------

def test_repeated_exports_do_not_accumulate_folders():
    """The Data tab writes each export into the process's download folder; an export older than
    DOWNLOAD_MAX_AGE_S (Gradio copied it long before) is removed when the next one is written."""
    from annotation.ui import downloads

    made = []
    for _ in range(5):
        folder = downloads.new_download_dir("export")
        made.append(folder)
        (folder / "p.jsonl").write_text("{}\n")
        past = time.time() - downloads.DOWNLOAD_MAX_AGE_S - 1
        os.utime(folder, (past, past))  # as if served ten minutes ago
    downloads.new_download_dir("export")
    left = list(downloads.download_folder().iterdir())
    assert all(not folder.exists() for folder in made) and len(left) == 1
