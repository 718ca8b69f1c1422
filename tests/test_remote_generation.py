"""Generation from a remote OpenAI-compatible server: a real `transformers serve` on a loopback port.

A project whose model is ``openai:http://127.0.0.1:PORT/v1#MODEL`` fills its queue from the server
through the usual worker, and labels flow as usual. The server honours neither `n` nor `logprobs`,
so these tests drive the one-request-per-sample path; the `n` path and the retries are checked
against a small scripted HTTP server (no engine answers 503 or honours `n` on demand here).
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import func, select

from alignment.remote import OpenAICompatibleBackend, RemoteGenerationError, RemoteModel
from alignment.sampling import SamplingParams
from annotation.generation import GenerationWorker, default_backend_factory, generate_items
from annotation.services import labelling
from annotation.services.data import export_labels
from annotation.services.projects import ProjectSettings, create_project
from annotation.services.prompts import add_text_prompts
from storage.db import transaction
from storage.errors import InputError
from storage.models import Item, ItemStatus, Response
from tests.browser_support import free_port
from tests.openai_server import OpenAIServer, require_transformers_serve, sampling_copy

PROMPT = [{"role": "user", "content": "Name a colour."}]


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    require_transformers_serve()
    folder = tmp_path_factory.mktemp("served")
    running = OpenAIServer(sampling_copy(tiny_model_dir, folder / "tiny-sampling"), folder / "serve.log")
    yield running
    running.stop()


def make_remote_project(db, name, spec, k=2, mode="pairwise", prompts=4, queue_target=3):
    create_project(db, ProjectSettings(name=name, model=spec, k=k, mode=mode, max_new_tokens=8,
                                       queue_target=queue_target))
    add_text_prompts(db, name, "\n".join(f"{name} question {i}?" for i in range(prompts)))


def test_spec_parsing():
    chat = RemoteModel.parse("openai:http://127.0.0.1:8000/v1#Qwen/Qwen2.5-7B-Instruct")
    assert (chat.url, chat.model, chat.chat) == ("http://127.0.0.1:8000/v1/chat/completions",
                                                 "Qwen/Qwen2.5-7B-Instruct", True)
    legacy = RemoteModel.parse("openai:http://127.0.0.1:8000/v1/completions/#m")
    assert (legacy.url, legacy.chat) == ("http://127.0.0.1:8000/v1/completions", False)
    for bad, why in [("openai:http://127.0.0.1:8000/v1", "names no model"), ("openai:ftp://x/v1#m", "expected"),
                     ("openai:127.0.0.1:8000#m", "expected")]:
        with pytest.raises(ValueError, match=why):
            RemoteModel.parse(bad)


def test_a_malformed_spec_is_refused_at_project_creation(db):
    with pytest.raises(InputError, match="names no model"):
        create_project(db, ProjectSettings(name="r", model="openai:http://127.0.0.1:8000/v1"))


def test_worker_fills_the_queue_from_the_server_and_labels_flow(db, server, tmp_path):
    make_remote_project(db, "remote", server.spec(), prompts=4, queue_target=3)
    worker = GenerationWorker(db, poll_seconds=0.1, batch_prompts=2)
    while worker.run_once():
        pass
    assert worker.status.errors == {}
    with transaction(db) as s:
        items = s.scalars(select(Item).where(Item.status == ItemStatus.ready)).all()
        assert len(items) == 3
        for item in items:
            assert [r.position for r in item.responses] == [0, 1]
            for r in item.responses:
                assert r.model == server.spec() and r.source == "generated" and r.seed is not None
                assert 0 < r.num_tokens <= 8 and r.finish_reason in ("stop", "length") and r.text
        # Sampled, not greedy: the responses of the items are not all one text.
        assert len({r.text for item in items for r in item.responses}) > 1

    view = labelling.next_item(db, "remote", "alice")
    assert not labelling.submit_pairwise(db, view, "a").duplicate
    export_labels(db, "remote", "trl", tmp_path / "pairs.jsonl")
    [row] = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    # "a" is the response shown first: the server's text is what the export calls chosen.
    assert (row["chosen"], row["rejected"]) == (view.responses[0].text, view.responses[1].text)
    assert "remote question" in json.dumps(row["prompt"])


def test_completions_endpoint_and_k_parallel_requests(db, server):
    make_remote_project(db, "legacy", server.spec("/completions"), k=3, mode="listwise", prompts=2)
    backend = default_backend_factory(server.spec("/completions"))
    assert isinstance(backend, OpenAICompatibleBackend) and not backend.remote.chat
    result = generate_items(db, "legacy", backend, limit=2, seed=11)
    assert (result.items, result.responses) == (2, 6)
    assert backend._server_honours_n is False  # transformers serve ignores `n`: one request per sample
    with transaction(db) as s:
        seeds = {r.seed for r in s.scalars(select(Response))}
        assert len(seeds) == 1  # one batch: the seed recorded is the batch's


def test_a_server_that_is_down_gives_a_clear_error_and_stores_nothing(db):
    spec = f"openai:http://127.0.0.1:{free_port()}/v1#some-model"
    make_remote_project(db, "down", spec)
    backend = OpenAICompatibleBackend.from_spec(spec, max_retries=2, backoff_s=0.01)
    with pytest.raises(RemoteGenerationError, match=r"refused the connection .* after 3 attempt\(s\): is it running"):
        generate_items(db, "down", backend, limit=4)
    worker = GenerationWorker(db, backend_factory=lambda s: OpenAICompatibleBackend.from_spec(
        s, max_retries=0), poll_seconds=0.1)
    worker.run_once()
    assert "refused the connection" in worker.status.errors["down"]
    with transaction(db) as s:
        assert s.scalar(select(func.count()).select_from(Item)) == 0
        assert s.scalar(select(func.count()).select_from(Response)) == 0


class ScriptedServer:
    """A loopback HTTP server answering from a script: for retries and `n`, which no local engine
    can be made to exercise on demand. Records every request body it receives."""

    def __init__(self, answer):
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the stdlib's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                status, payload = answer(len(outer.requests), body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.spec = f"openai:http://127.0.0.1:{self.httpd.server_port}/v1#scripted"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def chat_answer(n, tokens_per_choice=3, logprobs=True):
    choices = []
    for i in range(n):
        choice = {"index": i, "message": {"role": "assistant", "content": f"answer {i}"},
                  "finish_reason": "length" if i == 0 else "stop"}
        if logprobs:
            choice["logprobs"] = {"content": [{"token": "t", "logprob": -1.0}] * (tokens_per_choice + i)}
        choices.append(choice)
    return {"choices": choices, "usage": {"completion_tokens": sum(tokens_per_choice + i for i in range(n))}}


def test_k_samples_in_one_request_where_the_server_honours_n():
    server = ScriptedServer(lambda _, body: (200, chat_answer(body.get("n", 1))))
    try:
        backend = OpenAICompatibleBackend.from_spec(server.spec)
        samples = backend.sample([PROMPT, PROMPT], 4, SamplingParams(seed=5, max_new_tokens=16))
    finally:
        server.close()
    assert len(server.requests) == 2 and all(r["n"] == 4 and r["seed"] == 5 for r in server.requests)
    assert [[s.num_tokens for s in row] for row in samples] == [[3, 4, 5, 6]] * 2
    assert samples[0][0].finish_reason == "length" and samples[0][1].finish_reason == "stop"


def test_transient_failures_are_retried_with_backoff_then_reported():
    server = ScriptedServer(lambda count, body: (503, {"error": "warming up"}) if count <= 2 else
                            (200, chat_answer(1, logprobs=False)))
    try:
        backend = OpenAICompatibleBackend.from_spec(server.spec, backoff_s=0.01)
        [[sample]] = backend.sample([PROMPT], 1, SamplingParams(seed=1))
        assert (sample.text, sample.num_tokens, len(server.requests)) == ("answer 0", 3, 3)
        # A refusal that retrying cannot fix fails at once, with the server's reason.
        server.requests.clear()
        bad = ScriptedServer(lambda *_: (400, {"error": "unknown model"}))
        try:
            with pytest.raises(RemoteGenerationError, match="HTTP 400.*unknown model"):
                OpenAICompatibleBackend.from_spec(bad.spec).sample([PROMPT], 1, SamplingParams())
            assert len(bad.requests) == 1
        finally:
            bad.close()
    finally:
        server.close()


def test_one_failed_sample_fails_the_whole_batch():
    # The 3rd request of 4 fails for good: no prompt comes back with fewer than K samples.
    server = ScriptedServer(lambda count, body: (400, {"error": "bad"}) if count == 3 else
                            (200, chat_answer(1, logprobs=False)))
    try:
        backend = OpenAICompatibleBackend.from_spec(server.spec, max_parallel=1)
        with pytest.raises(RemoteGenerationError, match="HTTP 400"):
            backend.sample([PROMPT, PROMPT], 2, SamplingParams(seed=3))
    finally:
        server.close()
