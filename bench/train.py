"""Training benchmark: prefstudio's DPO and reward-model trainers vs TRL's, side by side.

Both sides train the embedded SmolLM2-135M-Instruct (fp32, CPU) with the same LoRA settings,
batch size, max length, learning rate, step count, seed and data (the first ``--pairs`` pairs of
the HH-RLHF harmless-base test split that fit in ``--max-length`` tokens, written once as TRL
conversational JSONL and read by both). Each side runs in its own subprocess so its peak RSS is
its own; the parent collects one JSON result per side and prints, per method, pairs/s, peak RSS,
wall time, the time split and the loss at every step, then the ratios ours/TRL.

DPO pairs/s is end to end: model load, tokenisation, the reference pass and training. TRL's
``DPOTrainer`` runs as shipped (reference log-probs computed on the fly inside each step), with
``precompute_ref_log_probs=True`` (prefstudio computes them once before training) and with
gradient checkpointing off. TRL turns gradient checkpointing on by default and prefstudio does
not, so each method has two headline ratios: against TRL as shipped, and like for like against
TRL without it.

Run from the repository root (needs ``../shared/data/hh-rlhf-harmless-base-test.jsonl.gz``; the
benchmark is skipped with a message when it is absent):

    python -m bench.train                       # defaults: 16 pairs, batch 4, max length 512
    python -m bench.train --methods dpo --repeats 2 --json /tmp/train.json
    python -m bench.train --ours-gradient-checkpointing both   # prefstudio with and without it

Wall times on a shared CPU move by 2-4x with other work; each side's result records the load
average at its start and end and its CPU time, and ``--repeats`` alternates the order of the
sides. Compare only runs made while the load average stays near the benchmark's own threads.
Every run's raw result (per-step losses and times, load averages, settings, commit, versions)
goes to ``bench/results/train.json`` (``--json``).

One side alone (what the parent runs in each subprocess):

    python -m bench.train --side ours-dpo|trl-dpo|ours-rm|trl-rm --spec spec.json --result out.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.results import add_json_option, describe_code, environment, load_average, measured, write_results

# Benchmarks run offline and without telemetry, like the app.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"
GB = 1e9

TARGETS = {
    "dpo": {"speed": 3.0, "rss_share": 0.25},  # >= 3x TRL pairs/s at <= 25% of TRL's peak RSS
    "rm": {"speed": 1.5, "rss_bytes": 2e9},  # >= 1.5x TRL pairs/s at <= 2 GB
}


@dataclass(frozen=True)
class Run:
    """One subprocess: a side of the benchmark and its variant."""

    key: str  # unique label in the tables
    side: str  # ours-dpo | trl-dpo | ours-rm | trl-rm
    method: str  # dpo | rm
    precompute_ref: bool = False
    trl_gc: bool | None = None  # TRL's gradient checkpointing: None = --trl-gradient-checkpointing
    ours_gc: bool | None = None  # prefstudio's gradient checkpointing: None = its default
    # Preload jemalloc, as prefstudio's job runner and `app.py train` do when the system has it.
    jemalloc: bool = False


RUNS = {
    "dpo": [Run("trl-dpo", "trl-dpo", "dpo"),
            Run("ours-dpo", "ours-dpo", "dpo", jemalloc=True),
            Run("trl-dpo-precompute", "trl-dpo", "dpo", precompute_ref=True),
            Run("trl-dpo-jemalloc", "trl-dpo", "dpo", jemalloc=True),
            Run("trl-dpo-no-ckpt", "trl-dpo", "dpo", trl_gc=False),
            Run("ours-dpo-gc", "ours-dpo", "dpo", ours_gc=True, jemalloc=True)],
    "rm": [Run("trl-rm", "trl-rm", "rm"),
           Run("ours-rm", "ours-rm", "rm", jemalloc=True),
           Run("trl-rm-jemalloc", "trl-rm", "rm", jemalloc=True),
           Run("trl-rm-no-ckpt", "trl-rm", "rm", trl_gc=False),
           Run("ours-rm-gc", "ours-rm", "rm", ours_gc=True, jemalloc=True)],
}
#: Runs only made with --ours-gradient-checkpointing both.
BOTH_ONLY = {"ours-dpo-gc", "ours-rm-gc"}
#: Runs only made with --trl-jemalloc (TRL with the same allocator as prefstudio's jobs, for fairness).
TRL_JEMALLOC_ONLY = {"trl-dpo-jemalloc", "trl-rm-jemalloc"}
LABELS = {
    "ours-dpo": "prefstudio train_dpo",
    "ours-dpo-gc": "prefstudio train_dpo (gradient_checkpointing=True)",
    "trl-dpo": "TRL DPOTrainer (ref on the fly)",
    "trl-dpo-precompute": "TRL DPOTrainer (precompute_ref_log_probs)",
    "trl-dpo-jemalloc": "TRL DPOTrainer (ref on the fly) with jemalloc",
    "trl-dpo-no-ckpt": "TRL DPOTrainer (ref on the fly), gradient checkpointing off",
    "trl-rm-jemalloc": "TRL RewardTrainer with jemalloc",
    "ours-rm": "prefstudio train_reward_model",
    "ours-rm-gc": "prefstudio train_reward_model (gradient_checkpointing=True)",
    "trl-rm": "TRL RewardTrainer",
    "trl-rm-no-ckpt": "TRL RewardTrainer, gradient checkpointing off",
}
#: Per method, the TRL runs the headline ratios are taken against: as shipped, and like for like.
HEADLINE = {"dpo": ("trl-dpo", "trl-dpo-no-ckpt"), "rm": ("trl-rm", "trl-rm-no-ckpt")}


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------

def prepare_data(source: Path, out: Path, pairs: int, max_length: int) -> dict[str, Any]:
    """Write the first ``pairs`` pairs that fit in ``max_length`` tokens on both sides as TRL JSONL.

    A pair fits when, for chosen and rejected alike, TRL's tokenisation (the whole conversation
    through the chat template, which adds ``<|im_end|>\\n`` after the reply) and prefstudio's
    (rendered prompt + reply + EOS) are both at most ``max_length`` tokens: then neither side
    truncates and neither drops a row, so both train on identical examples.
    """
    from alignment.chat import render_prompt
    from alignment.training.lora import base_model_location, load_tokenizer
    from storage.exporters import trl_chat_pair_row
    from storage.importers import read_import_file

    tokenizer = load_tokenizer(base_model_location("default"))
    report = read_import_file(source)
    rows, skipped, lengths = [], 0, []
    for record in report.records:
        if len(rows) == pairs:
            break
        row = trl_chat_pair_row(record.prompt, record.is_chat, record.chosen, record.rejected)
        prompt_ids = tokenizer(render_prompt(tokenizer, record.prompt), add_special_tokens=False)["input_ids"]
        sizes = []
        for key, text in (("chosen", record.chosen), ("rejected", record.rejected)):
            trl_ids = tokenizer.apply_chat_template(row["prompt"] + row[key], tokenize=True,
                                                    return_dict=True)["input_ids"]
            ours = len(prompt_ids) + len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 1
            sizes += [len(trl_ids), ours]
        if max(sizes) > max_length or not record.chosen.strip() or not record.rejected.strip():
            skipped += 1
            continue
        rows.append(row)
        lengths.append(max(sizes))
    if len(rows) < pairs:
        raise SystemExit(f"only {len(rows)} pairs of {source} fit in {max_length} tokens; ask for fewer --pairs")
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return {"pairs": len(rows), "skipped_too_long": skipped, "max_tokens": max(lengths),
            "mean_tokens": statistics.mean(lengths)}


# --------------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------------

def child_env(threads: int, jemalloc: bool = False) -> dict[str, str]:
    from alignment.training.memory import with_jemalloc

    env = with_jemalloc() if jemalloc else {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false",
                "HF_DATASETS_OFFLINE": "1", "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1"})
    return env


def run_child(run: Run, spec: dict[str, Any], workdir: Path, index: int) -> dict[str, Any]:
    """Run one side in a fresh interpreter and return its JSON result (with ``ok`` and the log path)."""
    run_dir = workdir / f"{index:02d}-{run.key}"
    run_dir.mkdir(parents=True, exist_ok=True)
    spec = {**spec, "workdir": str(run_dir), "precompute_ref": run.precompute_ref,
            "_loadavg_start": load_average()}
    if run.trl_gc is not None:
        spec["trl_gradient_checkpointing"] = run.trl_gc
    if run.ours_gc is not None:
        spec["ours_gradient_checkpointing"] = run.ours_gc
    spec_path, result_path, log_path = run_dir / "spec.json", run_dir / "result.json", run_dir / "log.txt"
    spec_path.write_text(json.dumps(spec, indent=2), encoding="utf-8")
    command = [sys.executable, "-m", "bench.train", "--side", run.side, "--spec", str(spec_path),
               "--result", str(result_path)]
    window: dict[str, Any] = {}
    with measured(window), log_path.open("w", encoding="utf-8") as log:
        proc = subprocess.run(command, cwd=ROOT, env=child_env(spec["threads"], run.jemalloc), stdout=log,
                              stderr=subprocess.STDOUT)
    elapsed = window["block_wall_s"]
    process = {"key": run.key, "method": run.method, "log": str(log_path), "process_s": elapsed,
               "process_loadavg_start": window["loadavg_start"], "process_loadavg_end": window["loadavg_end"]}
    if proc.returncode != 0 or not result_path.is_file():
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
        print(f"  {run.key}: FAILED (exit {proc.returncode}) after {elapsed:.0f} s; log {log_path}:\n{tail}",
              flush=True)
        return {**process, "ok": False, "exit_code": proc.returncode, "log_tail": tail}
    result = json.loads(result_path.read_text(encoding="utf-8"))
    result.update({**process, "ok": True})
    print(f"  {run.key}: {result['steps']} steps, wall {result['wall_s']:.1f} s, "
          f"peak RSS {result['peak_rss_bytes'] / GB:.2f} GB, "
          f"losses {' '.join(f'{x:.4f}' for x in result['losses'])}, "
          f"load average {window['loadavg_start'][0]:.2f} -> {window['loadavg_end'][0]:.2f}", flush=True)
    return result


def schedule(methods: list[str], repeats: int, only: set[str] | None, both_gc: bool = False,
             reverse: bool = False, trl_jemalloc: bool = False) -> list[Run]:
    """Runs in order, alternating sides: each repeat reverses the order of the one before."""
    order: list[Run] = []
    for repeat in range(repeats):
        for method in methods:
            runs = [r for r in RUNS[method] if (only is None or r.key in only) and (both_gc or r.key not in BOTH_ONLY)
                    and (trl_jemalloc or r.key not in TRL_JEMALLOC_ONLY)]
            order.extend(runs if (repeat + reverse) % 2 == 0 else list(reversed(runs)))
    return order


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------

def pairs_done(result: dict[str, Any], batch_size: int) -> int:
    """Pairs trained on: steps x batch size, capped by the data in each epoch."""
    n, steps = result["n_train"], result["steps"]
    per_epoch = math.ceil(n / batch_size)
    full_epochs, rest = divmod(steps, per_epoch)
    return full_epochs * n + min(rest * batch_size, n)


def summarise(results: list[dict[str, Any]], batch_size: int) -> dict[str, dict[str, Any]]:
    """Per run key: the median over repeats of each figure, and the per-step losses of the first run."""
    out: dict[str, dict[str, Any]] = {}
    for key in dict.fromkeys(r["key"] for r in results):
        good = [r for r in results if r["key"] == key and r.get("ok")]
        if not good:
            out[key] = {"ok": False}
            continue
        pairs = pairs_done(good[0], batch_size)

        def med(field: str) -> float | None:
            values = [r[field] for r in good if r.get(field) is not None]
            return statistics.median(values) if values else None

        out[key] = {
            "ok": True, "runs": len(good), "pairs": pairs, "n_train": good[0]["n_train"], "steps": good[0]["steps"],
            "wall_s": med("wall_s"), "cpu_s": med("cpu_s"), "setup_s": med("setup_s"),
            "reference_s": med("reference_s"), "train_s": med("train_s"), "finish_s": med("finish_s"),
            "peak_rss_bytes": med("peak_rss_bytes"), "rss_after_imports_bytes": med("rss_after_imports_bytes"),
            "pairs_per_s": statistics.median(pairs / r["wall_s"] for r in good),
            "train_pairs_per_s": statistics.median(pairs / r["train_s"] for r in good if r["train_s"]),
            "losses": good[0]["losses"], "all_walls": [round(r["wall_s"], 1) for r in good],
            "reference_inside_steps": good[0].get("reference_inside_steps", False),
            "gradient_checkpointing": good[0].get("gradient_checkpointing"),
            "micro_batch_size": good[0].get("micro_batch_size"), "batch_size": batch_size,
            "allocator": good[0].get("allocator", "?"),
            "loadavg_start": [r.get("process_loadavg_start") for r in good],
            "loadavg_end": [r.get("process_loadavg_end") for r in good],
        }
    return out


def _f(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def method_tables(method: str, summary: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown lines: the side table, the per-step losses, the ratios against each TRL variant."""
    keys = [r.key for r in RUNS[method] if r.key in summary and summary[r.key].get("ok")]
    keys = sorted(keys, key=lambda k: not k.startswith("ours"))  # ours first
    if not keys:
        return []
    lines = [f"### {method.upper()}", "",
             "| side | grad. ckpt | examples per forward | allocator | pairs/s | train-loop pairs/s | peak RSS GB "
             "| wall s | CPU s | setup s | reference s | train s |",
             "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for key in keys:
        s = summary[key]
        ref = _f(s["reference_s"], 1)
        if s["reference_inside_steps"] and s["reference_s"] is not None:
            ref += " (in steps)"
        if method == "rm":
            ref = "-"
        walls = "/".join(str(w) for w in s["all_walls"]) if s["runs"] > 1 else _f(s["wall_s"], 1)
        gc = "on" if s["gradient_checkpointing"] else "off"
        per_forward = s.get("micro_batch_size") or s.get("batch_size") or "batch"
        lines.append(f"| {LABELS[key]} | {gc} | {per_forward} | {s['allocator']} | {_f(s['pairs_per_s'], 3)} | {_f(s['train_pairs_per_s'], 3)} "
                     f"| {_f(s['peak_rss_bytes'] / GB)} | {walls} | {_f(s['cpu_s'], 1)} | {_f(s['setup_s'], 1)} "
                     f"| {ref} | {_f(s['train_s'], 1)} |")
    steps = max(len(summary[k]["losses"]) for k in keys)
    lines += ["", "Loss per step:", "", "| step | " + " | ".join(LABELS[k] for k in keys) + " |",
              "| ---: | " + " | ".join("---:" for _ in keys) + " |"]
    for i in range(steps):
        cells = [_f(summary[k]["losses"][i], 4) if i < len(summary[k]["losses"]) else "-" for k in keys]
        lines.append(f"| {i + 1} | " + " | ".join(cells) + " |")
    ours_keys = [k for k in keys if k.startswith("ours")]
    trl_keys = [k for k in keys if not k.startswith("ours")]
    if ours_keys and trl_keys:
        lines += ["", "Ratios ours/TRL:", ""]
    target = TARGETS[method]
    for ours_key in ours_keys:
        ours = summary[ours_key]
        for key in trl_keys:
            trl = summary[key]
            speed = ours["pairs_per_s"] / trl["pairs_per_s"]
            train_speed = ours["train_pairs_per_s"] / trl["train_pairs_per_s"]
            rss = ours["peak_rss_bytes"] / trl["peak_rss_bytes"]
            cpu = trl["cpu_s"] / ours["cpu_s"]
            verdict = f"speed {'met' if speed >= target['speed'] else 'MISSED'} (target >= {target['speed']}x)"
            if "rss_share" in target:
                verdict += (f", memory {'met' if rss <= target['rss_share'] else 'MISSED'} "
                            f"(target <= {target['rss_share']:.0%})")
            else:
                ok = ours["peak_rss_bytes"] <= target["rss_bytes"]
                verdict += f", memory {'met' if ok else 'MISSED'} (ours <= {target['rss_bytes'] / GB:.0f} GB)"
            lines.append(f"- {LABELS[ours_key]} vs {LABELS[key]}: pairs/s **{speed:.2f}x** (train loop "
                         f"{train_speed:.2f}x), CPU time {cpu:.2f}x less, peak RSS **{rss:.0%}** of TRL's; {verdict}")
    return lines + [""]


def headline_ratios(summary: dict[str, dict[str, Any]], methods: list[str]) -> dict[str, dict[str, Any]]:
    """Per method, prefstudio's defaults against TRL as shipped and against TRL without checkpointing."""
    out: dict[str, dict[str, Any]] = {}
    for method in methods:
        ours = summary.get(f"ours-{method}", {})
        if not ours.get("ok"):
            continue
        for trl_key in HEADLINE[method]:
            trl = summary.get(trl_key, {})
            if trl.get("ok"):
                out.setdefault(method, {})[trl_key] = {
                    "pairs_per_s_ratio": ours["pairs_per_s"] / trl["pairs_per_s"],
                    "peak_rss_share": ours["peak_rss_bytes"] / trl["peak_rss_bytes"],
                    "trl_gradient_checkpointing": trl["gradient_checkpointing"]}
    return out


def report(summary: dict[str, dict[str, Any]], methods: list[str]) -> str:
    lines: list[str] = []
    for method in methods:
        lines += method_tables(method, summary)
    headline = headline_ratios(summary, methods)
    if headline:
        lines += ["Headline ratios, prefstudio vs TRL with and without gradient checkpointing:", ""]
    for method, against in headline.items():
        ours_gc = "on" if summary[f"ours-{method}"]["gradient_checkpointing"] else "off"
        cells = [f"{ratio['pairs_per_s_ratio']:.2f}x pairs/s at {ratio['peak_rss_share']:.0%} of the peak RSS "
                 f"against TRL with gradient checkpointing "
                 + ("on (as shipped)" if ratio["trl_gradient_checkpointing"] else "off (like for like)")
                 for ratio in against.values()]
        lines.append(f"- {method.upper()} (prefstudio's gradient checkpointing {ours_gc}): " + "; ".join(cells))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="HH-RLHF (or TRL) pairs file")
    p.add_argument("--pairs", type=int, default=16, help="pairs to train on (P)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: P / batch size)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--lora-alpha", type=int, default=32)
    p.add_argument("--lora-dropout", type=float, default=0.05)
    p.add_argument("--dpo-lr", type=float, default=5e-5)
    p.add_argument("--rm-lr", type=float, default=1e-4)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch threads per side")
    p.add_argument("--methods", default="dpo,rm", help="comma-separated: dpo, rm")
    p.add_argument("--only", default=None, help="comma-separated run keys to keep, e.g. ours-dpo,trl-dpo")
    p.add_argument("--repeats", type=int, default=1, help="repeat every run, alternating the order")
    p.add_argument("--trl-gradient-checkpointing", choices=("default", "on", "off"), default="default",
                   help="TRL's gradient checkpointing (its default is on)")
    p.add_argument("--ours-gradient-checkpointing", choices=("default", "on", "off", "both"), default="default",
                   help="prefstudio's gradient checkpointing, where its training config has the setting "
                        "(both: its runs are made twice, off and on)")
    p.add_argument("--reverse", action="store_true", help="start with the reversed order of the runs")
    p.add_argument("--trl-jemalloc", action="store_true",
                   help="also run TRL with jemalloc preloaded, the allocator prefstudio's training runs use")
    p.add_argument("--workdir", type=Path, default=None, help="where runs write (default: a temp folder)")
    add_json_option(p, "train")
    # child mode
    p.add_argument("--side", default=None, help=argparse.SUPPRESS)
    p.add_argument("--spec", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    return p


def child_main(args: argparse.Namespace) -> int:
    from bench.train_sides import run_side

    spec = json.loads(args.spec.read_text(encoding="utf-8"))
    result = run_side(args.side, spec)
    args.result.write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.side:
        return child_main(args)
    if not args.data.is_file():
        print(f"SKIP bench.train: data file {args.data} not found (expected the HH-RLHF harmless-base test "
              f"split under ../shared/data); nothing was run.")
        return 0
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in RUNS]
    if unknown:
        raise SystemExit(f"unknown method(s) {', '.join(unknown)}; expected dpo, rm")
    only = {k.strip() for k in args.only.split(",")} if args.only else None
    steps = args.steps or max(1, math.ceil(args.pairs / args.batch_size))
    gc = {"default": None, "on": True, "off": False}[args.trl_gradient_checkpointing]
    ours_gc = {"default": None, "on": True, "off": False, "both": False}[args.ours_gradient_checkpointing]
    both_gc = args.ours_gradient_checkpointing == "both"
    if ours_gc is not None or both_gc:
        from dataclasses import fields

        from alignment.training import CommonConfig

        if "gradient_checkpointing" not in {f.name for f in fields(CommonConfig)}:
            raise SystemExit("--ours-gradient-checkpointing: this prefstudio has no gradient_checkpointing setting")

    started = environment()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="prefstudio-bench-train-"))
    workdir.mkdir(parents=True, exist_ok=True)
    data_path = workdir / "pairs.jsonl"
    data_info = prepare_data(args.data, data_path, args.pairs, args.max_length)
    spec = {"data": str(data_path), "pairs": args.pairs, "steps": steps, "batch_size": args.batch_size,
            "max_length": args.max_length, "lora_r": args.lora_r, "lora_alpha": args.lora_alpha,
            "lora_dropout": args.lora_dropout, "dpo_lr": args.dpo_lr, "rm_lr": args.rm_lr, "beta": args.beta,
            "seed": args.seed, "threads": args.threads, "trl_gradient_checkpointing": gc,
            "ours_gradient_checkpointing": ours_gc}
    print(f"bench.train {time.strftime('%Y-%m-%d %H:%M')}: {data_info['pairs']} pairs "
          f"({data_info['skipped_too_long']} longer than {args.max_length} tokens skipped; longest "
          f"{data_info['max_tokens']}, mean {data_info['mean_tokens']:.0f} tokens per sequence), {steps} steps of "
          f"{args.batch_size}, LoRA r={args.lora_r} alpha={args.lora_alpha} dropout={args.lora_dropout} all-linear, "
          f"lr {args.dpo_lr:g} (DPO) / {args.rm_lr:g} (RM), beta {args.beta}, seed {args.seed}, fp32 CPU, "
          f"{args.threads} threads, gradient checkpointing: TRL {args.trl_gradient_checkpointing}, prefstudio "
          f"{args.ours_gradient_checkpointing}; code {describe_code(started['code'])}; "
          f"load average {' '.join(f'{x:.2f}' for x in load_average())}; work dir {workdir}", flush=True)

    results = []
    for index, run in enumerate(schedule(methods, args.repeats, only, both_gc, args.reverse, args.trl_jemalloc)):
        print(f"[{index + 1}] {run.key} ...", flush=True)
        results.append(run_child(run, spec, workdir, index))
    summary = summarise(results, args.batch_size)
    print()
    print(report(summary, methods))
    print(f"order run: {', '.join(r['key'] for r in results)}; load average at each start and end: "
          + ", ".join(f"{r['key']} {r['process_loadavg_start'][0]:.2f}-{r['process_loadavg_end'][0]:.2f}"
                      for r in results))
    write_results(args.json, "train", args, {"spec": spec, "data": data_info, "runs": results, "summary": summary,
                                             "headline": headline_ratios(summary, methods)}, started)
    return 0 if all(r.get("ok") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
