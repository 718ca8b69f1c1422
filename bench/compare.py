"""Side-by-side benchmark: two models answering the same prompt, batched in one generate call vs one after the other.

The embedded model ("default") and one LoRA adapter on it answer the same HH-RLHF prompts (the
first ``--prompts`` of ``../shared/data/hh-rlhf-harmless-base-test.jsonl.gz``) with the same seed,
sampling settings and ``--max-new-tokens``, through :func:`alignment.compare.answer_side_by_side`:

* batched: one ``generate`` call whose two rows use different adapters (both models active, the
  adapter's LoRA scaling masked to its row: :func:`alignment.row_masked_lora.row_masked_adapters`);
* one after the other: the base with its adapter disabled, then the adapter, one row each (what
  one would do without batching: ``disable_adapter()``, then ``set_adapter``).

Without ``--adapter`` a LoRA adapter with random weights (``init_lora_weights=False``, all linear
layers) is made on the fly in a temporary folder, so no training is needed. Both ways give the
same answers (every row draws the same seeded random numbers), so their token counts match and the
ratio of generation times is the speed-up. The two ways alternate ``--repeats`` times (the order
flips every repeat, since neighbours' load on a shared machine comes and goes); the median repeat
of each way is reported. Run from the repository root:

    python -m bench.compare                         # defaults: 4 prompts, 128 new tokens, 3 repeats
    python -m bench.compare --adapter runs/dpo --json /tmp/compare.json

"generate s" is the time inside ``generate`` (what batching changes); "wall s" adds the per-token
KL of the adapter's answer to the base (the same work either way). 128 new tokens is the Compare
tab's default. A batch runs until its longest answer stops, so batching saves at most the shorter
answer's decoding: "stopped early" counts the answers that ended before the limit.

Every repeat of each way (per-prompt times, token counts, answers, the load average at its start
and end), the settings, commit and versions go to ``bench/results/compare.json`` (``--json``).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.results import add_json_option, load_average, measured, write_results

# Benchmarks run offline and without telemetry, like the app.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"
TARGET = 1.6  # batched must be at least this many times faster than one after the other


@dataclass
class Measurement:
    """One way of answering all prompts once: generated tokens over time."""

    way: str
    answers: int
    stopped: int  # answers that ended with a stop token before max_new_tokens
    tokens: int
    generate_s: float
    wall_s: float
    texts: list[str]
    prompt_s: list[float]  # generate time per prompt (both answers)
    answer_tokens: list[int]  # tokens of every answer, prompt by prompt
    window: dict[str, Any] = field(default_factory=dict)  # load average at the start and end

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.generate_s if self.generate_s else 0.0


def load_prompts(path: Path, count: int) -> list[list[dict]]:
    """The first ``count`` prompts (chat messages) of an HH-RLHF file."""
    from storage.importers import read_import_file

    records = read_import_file(path).records[:count]
    if len(records) < count:
        raise SystemExit(f"{path} holds only {len(records)} readable records; ask for fewer --prompts")
    return [record.prompt for record in records]


def random_adapter(model_spec: str, out: Path, r: int, alpha: int) -> Path:
    """A LoRA adapter on ``model_spec`` with random A and B (``init_lora_weights=False``), all linear layers."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM

    from alignment.training.lora import base_model_location

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(base_model_location(model_spec))
    model = get_peft_model(base, LoraConfig(r=r, lora_alpha=alpha, target_modules="all-linear",
                                            task_type=TaskType.CAUSAL_LM, init_lora_weights=False))
    model.save_pretrained(out)
    return out


def measure(refs: list[Any], prompts: list[list[dict]], params: Any, seed: int, batched: bool) -> Measurement:
    """Answer every prompt with every model once, batched or one after the other."""
    from alignment.compare import answer_side_by_side

    tokens = stopped = 0
    generate_s = 0.0
    texts: list[str] = []
    prompt_s: list[float] = []
    answer_tokens: list[int] = []
    window: dict[str, Any] = {}
    with measured(window):
        for messages in prompts:
            answers = answer_side_by_side(refs, messages, params, seed=seed, batched=batched)
            tokens += sum(a.num_tokens for a in answers)
            stopped += sum(a.finish_reason == "stop" for a in answers)
            # Batched answers share one generate call (and its time); unbatched ones each had their own.
            prompt_s.append(answers[0].seconds if batched else sum(a.seconds for a in answers))
            generate_s += prompt_s[-1]
            texts += [a.text for a in answers]
            answer_tokens += [a.num_tokens for a in answers]
    way = "batched (1 generate, 2 rows)" if batched else "one after the other"
    return Measurement(way, len(texts), stopped, tokens, generate_s, window["block_wall_s"], texts, prompt_s,
                       answer_tokens, window)


def median_run(runs: list[Measurement]) -> Measurement:
    return sorted(runs, key=lambda m: m.generate_s)[len(runs) // 2]


def table(batched: Measurement, alone: Measurement) -> str:
    lines = [f"{'way':<30} {'answers':>7} {'stopped early':>13} {'tokens':>7} {'generate s':>10} {'tokens/s':>9} "
             f"{'wall s':>7}"]
    for m in (batched, alone):
        lines.append(f"{m.way:<30} {m.answers:>7} {m.stopped:>13} {m.tokens:>7} {m.generate_s:>10.2f} "
                     f"{m.tokens_per_s:>9.1f} {m.wall_s:>7.2f}")
    lines.append(f"speed-up (one after the other / batched, generate time): {speed_up(batched, alone):.2f}x "
                 f"(target >= {TARGET}x); wall time: {alone.wall_s / batched.wall_s:.2f}x")
    return "\n".join(lines)


def per_prompt_table(batched_runs: list[Measurement], alone_runs: list[Measurement]) -> str:
    """Median generate time per prompt over the repeats, each way, with the answers' lengths."""
    lines = [f"{'prompt':>6} {'tokens (base, adapter)':>22} {'batched s':>9} {'one after other s':>17} {'speed-up':>8}"]
    first = batched_runs[0]
    for i in range(len(first.prompt_s)):
        b = sorted(r.prompt_s[i] for r in batched_runs)[len(batched_runs) // 2]
        a = sorted(r.prompt_s[i] for r in alone_runs)[len(alone_runs) // 2]
        tokens = ", ".join(str(t) for t in first.answer_tokens[2 * i:2 * i + 2])
        lines.append(f"{i + 1:>6} {tokens:>22} {b:>9.2f} {a:>17.2f} {a / b:>7.2f}x")
    return "\n".join(lines)


def speed_up(batched: Measurement, alone: Measurement) -> float:
    return alone.generate_s / batched.generate_s if batched.generate_s else float("inf")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="default", help="base model spec (default: the embedded SmolLM2)")
    p.add_argument("--adapter", type=Path, default=None,
                   help="LoRA adapter folder trained on --model (default: a random one made on the fly)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="HH-RLHF file the prompts come from")
    p.add_argument("--prompts", type=int, default=4, help="how many prompts each way answers per repeat")
    p.add_argument("--max-new-tokens", type=int, default=128, help="new tokens per answer (the Compare tab's default)")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--repeats", type=int, default=3, help="alternate both ways N times, report the median of each")
    p.add_argument("--lora-r", type=int, default=16, help="rank of the random adapter")
    p.add_argument("--lora-alpha", type=int, default=32, help="alpha of the random adapter")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: torch's choice); on a loaded shared CPU fewer threads thrash less")
    add_json_option(p, "compare")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.data.is_file():
        print(f"SKIP bench.compare: prompt file {args.data} not found (expected the HH-RLHF harmless-base test "
              f"split under ../shared/data); nothing was run.")
        return 0
    import torch

    from alignment.compare import ModelRef
    from alignment.comparison_model import get_comparison_model
    from alignment.sampling import SamplingParams

    if args.threads:
        torch.set_num_threads(args.threads)
    prompts = load_prompts(args.data, args.prompts)
    workdir = Path(tempfile.mkdtemp(prefix="prefstudio-bench-compare-"))
    adapter = args.adapter or random_adapter(args.model, workdir / "random-adapter", args.lora_r, args.lora_alpha)
    refs = [ModelRef(args.model, label="base"), ModelRef(args.model, str(adapter), label="adapter")]
    params = SamplingParams(temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens)

    started = time.perf_counter()
    compared = get_comparison_model(args.model, [adapter])
    print(f"bench.compare {time.strftime('%Y-%m-%d %H:%M')}: {compared.loaded.name} on {compared.loaded.device} "
          f"(loaded in {time.perf_counter() - started:.1f} s) + adapter {adapter}"
          f"{' (random, r=%d alpha=%d, all linear)' % (args.lora_r, args.lora_alpha) if not args.adapter else ''}; "
          f"{len(prompts)} HH-RLHF prompts x 2 models, max_new_tokens {args.max_new_tokens}, temperature "
          f"{args.temperature}, top_p {args.top_p}, seed {args.seed}, {args.repeats} repeats, torch threads "
          f"{torch.get_num_threads()}, load average {' '.join(f'{x:.2f}' for x in load_average())}", flush=True)
    measure(refs, prompts[:1], SamplingParams(max_new_tokens=4), args.seed, batched=True)  # warm-up

    runs: dict[bool, list[Measurement]] = {True: [], False: []}
    for repeat in range(args.repeats):
        for batched in ((True, False) if repeat % 2 == 0 else (False, True)):
            run = measure(refs, prompts, params, args.seed, batched)
            runs[batched].append(run)
            print(f"  repeat {repeat + 1}: {run.way:<30} {run.generate_s:7.2f} s generate, {run.tokens} tokens, "
                  f"load average {run.window['loadavg_start'][0]:.2f} -> {run.window['loadavg_end'][0]:.2f}",
                  flush=True)
    batched, alone = median_run(runs[True]), median_run(runs[False])
    same = all(b.texts == a.texts for b, a in zip(runs[True], runs[False]))
    print()
    print(per_prompt_table(runs[True], runs[False]))
    print()
    print(table(batched, alone))
    print(f"same answers batched and one after the other: {'yes' if same else 'NO'}; "
          f"load average now {' '.join(f'{x:.2f}' for x in load_average())}")
    write_results(args.json, "compare", args, {
        "adapter": str(adapter), "random_adapter": args.adapter is None, "device": compared.loaded.device,
        "torch_threads": torch.get_num_threads(), "prompt_count": len(prompts), "same_answers": same,
        "speed_up": speed_up(batched, alone), "wall_speed_up": alone.wall_s / batched.wall_s,
        "median_repeat": {"batched": runs[True].index(batched), "alone": runs[False].index(alone)},
        "runs": {"batched": runs[True], "alone": runs[False]}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
