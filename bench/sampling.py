"""Sampling benchmark: how fast prefstudio draws K candidate responses per prompt.

Part 1 (throughput) compares generated tokens/s of the batched ``TransformersBackend.sample``
against the naive approach of one ``model.generate`` call per response (batch size 1), on the
embedded default model. Run from the repository root:

    python -m bench.sampling [--k 4 --max-new-tokens 64 ...]

Each measurement is a function returning a :class:`Measurement`, so further parts (e.g. latency)
can be added beside :func:`measure_batched` / :func:`measure_naive` and reported from :func:`main`.
Part 2 (label latency in the browser) lives in :mod:`bench.queue_latency`. Every run of each part
(tokens and seconds, per-label milliseconds, the load average at its start and end), the settings,
commit and versions go to ``bench/results/sampling.json`` (``--json``).
"""
from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, field
from typing import Any

# Benchmarks must run offline and without telemetry, like the app.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import torch  # noqa: E402

from alignment.chat import Messages, render_prompt  # noqa: E402
from alignment.models import DEFAULT_MODEL, LoadedModel, get_model  # noqa: E402
from alignment.sampling import SamplingParams, TransformersBackend  # noqa: E402
from bench.results import add_json_option, measured, write_results  # noqa: E402

BENCH_PROMPTS: list[Messages] = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write a haiku about autumn leaves."}],
    [{"role": "user", "content": "Explain photosynthesis to a ten-year-old."}],
    [{"role": "user", "content": "Give me three tips for a good night's sleep."}],
    [{"role": "system", "content": "You are a concise assistant."},
     {"role": "user", "content": "What does HTTP stand for?"}],
    [{"role": "user", "content": "How do I reverse a list in Python?"}],
    [{"role": "user", "content": "Hi! Can you recommend a book?"},
     {"role": "assistant", "content": "Sure. What genres do you enjoy?"},
     {"role": "user", "content": "Science fiction, mostly."}],
    [{"role": "user", "content": "Is it rude to decline a wedding invitation? Why or why not?"}],
]


@dataclass
class Measurement:
    """Generated tokens (excluding eos and padding) over wall-clock seconds for one method."""

    method: str
    responses: int
    tokens: int
    seconds: float
    window: dict[str, Any] = field(default_factory=dict)  # load average at the start and end

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def measure_batched(loaded: LoadedModel, prompts: list[Messages], k: int, params: SamplingParams,
                    max_batch_rows: int) -> Measurement:
    """Time the production path: all prompts x K rows through ``TransformersBackend.sample``."""
    backend = TransformersBackend(loaded, max_batch_rows=max_batch_rows)
    window: dict[str, Any] = {}
    with measured(window):
        started = time.perf_counter()
        result = backend.sample(prompts, k, params)
        seconds = time.perf_counter() - started
    samples = [s for per_prompt in result for s in per_prompt]
    return Measurement(f"batched (<= {max_batch_rows} rows)", len(samples), sum(s.num_tokens for s in samples), seconds,
                       window)


def _generated_length(new_tokens: list[int], stop_ids: set[int]) -> int:
    """Tokens before the first stop token, counted the same way as ``Sample.num_tokens``."""
    return next((i for i, token in enumerate(new_tokens) if token in stop_ids), len(new_tokens))


def measure_naive(loaded: LoadedModel, prompts: list[Messages], k: int, params: SamplingParams) -> Measurement:
    """Time the baseline: one plain ``model.generate`` call per response, batch size 1."""
    tokenizer, model = loaded.tokenizer, loaded.model
    stop_ids = {tokenizer.eos_token_id}
    tokens = responses = 0
    window: dict[str, Any] = {}
    with measured(window):
        started = time.perf_counter()
        for messages in prompts:
            input_ids = tokenizer(render_prompt(tokenizer, messages), add_special_tokens=False,
                                  return_tensors="pt")["input_ids"].to(loaded.device)
            for j in range(k):
                if params.seed is not None:
                    torch.manual_seed(params.seed + j)
                with torch.inference_mode():
                    output = model.generate(
                        input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=params.max_new_tokens,
                        do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=None,
                        pad_token_id=tokenizer.pad_token_id,
                    )
                tokens += _generated_length(output[0, input_ids.shape[1]:].tolist(), stop_ids)
                responses += 1
        seconds = time.perf_counter() - started
    return Measurement("naive (1 generate per response)", responses, tokens, seconds, window)


def warm_up(loaded: LoadedModel) -> None:
    """One short generation so first-call costs (allocations, kernel selection) hit neither method."""
    TransformersBackend(loaded).sample(BENCH_PROMPTS[:1], 2, SamplingParams(max_new_tokens=4, seed=0))


def format_throughput_table(batched: Measurement, naive: Measurement) -> str:
    lines = [f"{'method':<34} {'responses':>9} {'tokens':>7} {'seconds':>8} {'tokens/s':>9}"]
    for m in (batched, naive):
        lines.append(f"{m.method:<34} {m.responses:>9} {m.tokens:>7} {m.seconds:>8.2f} {m.tokens_per_s:>9.1f}")
    ratio = batched.tokens_per_s / naive.tokens_per_s if naive.tokens_per_s else float("inf")
    lines.append(f"speed-up (batched / naive tokens/s): {ratio:.2f}x  (target >= 2x)")
    return "\n".join(lines)


def _median(measurements: list[Measurement]) -> Measurement:
    """The middle run by tokens/s (the faster middle one for an even count)."""
    return sorted(measurements, key=lambda m: m.tokens_per_s)[len(measurements) // 2]


def run_throughput(loaded: LoadedModel, args: argparse.Namespace) -> dict[str, Any]:
    """Part 1: batched vs naive generated tokens/s on the same prompts and settings.

    With ``--repeats N`` the two methods alternate N times and the median run of each is shown:
    on a shared CPU, neighbours' load comes and goes, and alternating exposes both methods to it.
    """
    prompts = BENCH_PROMPTS[:args.prompts]
    params = SamplingParams(temperature=args.temperature, top_p=args.top_p,
                            max_new_tokens=args.max_new_tokens, seed=args.seed)
    batched_runs, naive_runs = [], []
    for _ in range(args.repeats):
        batched_runs.append(measure_batched(loaded, prompts, args.k, params, args.batch_rows))
        naive_runs.append(measure_naive(loaded, prompts, args.k, params))
    batched, naive = _median(batched_runs), _median(naive_runs)
    print(f"\n== Throughput: {len(prompts)} prompts x K={args.k}, max_new_tokens={args.max_new_tokens}, "
          f"temperature={args.temperature}, top_p={args.top_p}, seed={args.seed}, "
          f"median of {args.repeats} run(s)")
    print(format_throughput_table(batched, naive))
    return {"batched_runs": batched_runs, "naive_runs": naive_runs,
            "median_run": {"batched": batched_runs.index(batched), "naive": naive_runs.index(naive)},
            "tokens_per_s": {"batched": batched.tokens_per_s, "naive": naive.tokens_per_s},
            "speed_up": batched.tokens_per_s / naive.tokens_per_s if naive.tokens_per_s else None}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model spec (default: the embedded SmolLM2)")
    parser.add_argument("--prompts", type=int, default=len(BENCH_PROMPTS), choices=range(1, len(BENCH_PROMPTS) + 1),
                        metavar=f"1..{len(BENCH_PROMPTS)}", help="how many of the built-in prompts to use")
    parser.add_argument("--k", type=int, default=4, help="samples per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--batch-rows", type=int, default=8, help="max rows per batched generate call")
    parser.add_argument("--repeats", type=int, default=1, help="alternate both methods N times, report medians")
    parser.add_argument("--labels", type=int, default=20, help="labels submitted in the latency part")
    parser.add_argument("--skip-throughput", action="store_true", help="run only the latency part")
    parser.add_argument("--skip-latency", action="store_true", help="run only the throughput part")
    add_json_option(parser, "sampling")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    figures: dict[str, Any] = {}
    if not args.skip_throughput:
        started = time.perf_counter()
        loaded = get_model(args.model)
        print(f"model: {loaded.name} on {loaded.device} (loaded in {time.perf_counter() - started:.1f} s), "
              f"torch threads: {torch.get_num_threads()}")
        warm_up(loaded)
        figures["throughput"] = {"model": loaded.name, "device": str(loaded.device),
                                 "torch_threads": torch.get_num_threads(), **run_throughput(loaded, args)}
    if not args.skip_latency:
        from bench.queue_latency import run_latency

        figures["latency"] = run_latency(args.model, args.labels)
    write_results(args.json, "sampling", args, figures)


if __name__ == "__main__":
    main()
