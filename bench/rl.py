"""Online RL benchmark: prefstudio's GRPO vs TRL 1.16's ``GRPOTrainer``, and PPO's step-time breakdown.

GRPO, both sides in one run, on the same inputs: the embedded SmolLM2-135M-Instruct (fp32, CPU),
the first ``--prompts`` prompts of the HH-RLHF harmless-base test split (conversational, written
once as JSONL and read by both), the same LoRA settings (all linear layers), K = ``--k`` answers
per prompt, at most ``--max-new-tokens`` tokens each, sampling at temperature 1 / top-p 1, the same
rule reward (:func:`length_reward`, a plain Python function with TRL's reward signature), the same
batch (``--batch-prompts`` prompts, i.e. batch x K completions per optimizer step: TRL counts its
batch in completions), beta 0.04 (so both compute the reference), one update per rollout and
sequence-mean loss aggregation (TRL's ``loss_type="grpo"``). TRL runs as shipped (gradient
checkpointing on) and, like for like with prefstudio, with it off.

Each side runs in its own subprocess (its peak RSS is its own, VmHWM); the sides alternate, and
``--repeats`` reverses the order each time, so slow minutes of the shared machine fall on both.
Completions per second are end to end (model load, sampling, rewards, reference, updates):
completions sampled / process-side wall time; the training loop's own rate is printed beside it.

PPO (no TRL baseline exists: TRL removed its PPOTrainer) is run by prefstudio alone, and its step
time is split into generation, reward, the actor's old log-probs, the reference pass, the critic's
values and the update (the rest of the loop), from the timings the method records per rollout.

    python -m bench.rl                       # defaults: 8 prompts, batch 2, K 4, 64 new tokens
    python -m bench.rl --steps 2 --repeats 2 --json /tmp/rl.json

Raw figures (per side: walls, RSS, CPU time, load averages; PPO's breakdown) go to
``bench/results/rl.json`` (``--json``).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.results import add_json_option, describe_code, environment, load_average, measured, write_results
from bench.train import DEFAULT_DATA, GB, ROOT, child_env  # bench.train also sets the offline environment

TARGETS = {"speed": 2.0, "rss_share": 0.5, "ppo_outside_generation": 0.4}
SIDES = ("ours-grpo", "trl-grpo", "trl-grpo-no-ckpt", "ours-ppo")
LABELS = {"ours-grpo": "prefstudio train_grpo", "trl-grpo": "TRL GRPOTrainer (as shipped: gradient checkpointing on)",
          "trl-grpo-no-ckpt": "TRL GRPOTrainer, gradient checkpointing off", "ours-ppo": "prefstudio train_ppo"}
TARGET_WORDS = 20


def length_reward(prompts: list[Any], completions: list[Any], **_: Any) -> list[float]:
    """The rule reward both sides use: 1 at 20 words, falling linearly to 0 at 0 or 40 words.
    TRL passes conversational completions as message lists, prefstudio as text."""
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [max(0.0, 1.0 - abs(len(t.split()) - TARGET_WORDS) / TARGET_WORDS) for t in texts]


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------

def prepare_prompts(source: Path, out: Path, count: int) -> int:
    """The first ``count`` distinct prompts of the import file as ``{"prompt": messages}`` JSONL."""
    from alignment.training.data import prompt_to_messages
    from storage.importers import read_import_file

    seen, rows = set(), []
    for record in read_import_file(source).records:
        messages = prompt_to_messages(record.prompt)
        key = json.dumps(messages, sort_keys=True)
        if key not in seen:
            seen.add(key)
            rows.append({"prompt": messages})
        if len(rows) == count:
            break
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return len(rows)


# --------------------------------------------------------------------------------------------
# One side, in its own process
# --------------------------------------------------------------------------------------------

def run_side(side: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Train one side; its wall time from after the imports, CPU time and peak RSS."""
    from bench.train_sides import cpu_seconds, peak_rss_bytes, rss_bytes

    import torch

    torch.set_num_threads(spec["threads"])
    rss_after_imports = rss_bytes()
    cpu0, started = cpu_seconds(), time.perf_counter()
    extra = {"ours-grpo": _ours, "ours-ppo": _ours, "trl-grpo": _trl, "trl-grpo-no-ckpt": _trl}[side](side, spec)
    wall = time.perf_counter() - started
    # GRPO samples afresh for every step (one update per rollout); PPO samples once per 4 steps, one answer each
    completions = (spec["steps"] * spec["batch_prompts"] * spec["k"] if side != "ours-ppo"
                   else -(-spec["ppo_steps"] // 4) * spec["batch_prompts"])
    return {"side": side, "wall_s": wall, "cpu_s": cpu_seconds() - cpu0, "peak_rss_bytes": peak_rss_bytes(),
            "rss_after_imports_bytes": rss_after_imports, "completions": completions,
            "completions_per_s": completions / wall, **extra}


def _ours(side: str, spec: dict[str, Any]) -> dict[str, Any]:
    from alignment.rl.grpo import GRPO
    from alignment.rl.ppo import PPO
    from alignment.training.config import GRPOConfig, PPOConfig
    from alignment.training.skeleton import train

    common = dict(model="default", data=spec["data"], out=str(Path(spec["workdir"]) / "out"), device="cpu",
                  max_steps=spec["steps"] if side == "ours-grpo" else spec["ppo_steps"], batch_size=spec["batch_prompts"], max_new_tokens=spec["max_new_tokens"],
                  temperature=1.0, top_p=1.0, lr=spec["lr"], lora_r=spec["lora_r"], lora_alpha=spec["lora_alpha"],
                  lora_dropout=0.0, seed=spec["seed"], eval_fraction=0.0, logging_steps=1,
                  reward_fn=[f"{Path(__file__).resolve()}:length_reward"])
    if side == "ours-grpo":
        method = GRPO(GRPOConfig(**common, num_generations=spec["k"], beta=spec["beta"], num_iterations=1,
                                 loss_aggregation="sequence"))
    else:  # PPO's defaults, one answer per prompt, 4 PPO epochs per rollout
        method = PPO(PPOConfig(**common))
    loop: dict[str, float] = {}

    def on_event(event: str, state: dict[str, Any]) -> None:
        if event in ("train_begin", "train_end"):
            loop[event] = time.perf_counter()

    result = train(method, [on_event])
    loop_s = loop["train_end"] - loop["train_begin"]
    return {"steps": result.steps, "train_loop_s": loop_s, "time_spent": method.time_spent,
            "micro_batch_size": method.config.resolved_micro_batch_size(),
            "reward_mean_per_step": _rewards(Path(common["out"]))}


def _rewards(out: Path) -> list[float]:
    from alignment.run_folder import PROGRESS_FILE, read_jsonl_so_far

    return [e["metrics"]["reward/mean"] for e in read_jsonl_so_far(out / PROGRESS_FILE)
            if e.get("event") == "step" and "reward/mean" in e.get("metrics", {})]


def _trl(side: str, spec: dict[str, Any]) -> dict[str, Any]:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from alignment.training.lora import base_model_location

    rows = [json.loads(line) for line in Path(spec["data"]).read_text(encoding="utf-8").splitlines()]
    args = GRPOConfig(
        output_dir=str(Path(spec["workdir"]) / "out"), per_device_train_batch_size=spec["batch_prompts"] * spec["k"],
        num_generations=spec["k"], max_completion_length=spec["max_new_tokens"], max_steps=spec["steps"],
        learning_rate=spec["lr"], beta=spec["beta"], loss_type="grpo", num_iterations=1, temperature=1.0, top_p=1.0,
        logging_steps=1, report_to=[], save_strategy="no", use_cpu=True, bf16=False, seed=spec["seed"],
        gradient_checkpointing=side == "trl-grpo", dataloader_num_workers=0, disable_tqdm=True)
    peft = LoraConfig(r=spec["lora_r"], lora_alpha=spec["lora_alpha"], lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    loop: dict[str, float] = {}

    class Timer(TrainerCallback):
        def on_train_begin(self, *_: Any, **__: Any) -> None:
            loop["begin"] = time.perf_counter()

        def on_train_end(self, *_: Any, **__: Any) -> None:
            loop["end"] = time.perf_counter()

    trainer = GRPOTrainer(model=base_model_location("default"), reward_funcs=length_reward, args=args,
                          train_dataset=Dataset.from_list(rows), peft_config=peft, callbacks=[Timer()])
    trainer.train()
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    return {"steps": trainer.state.global_step, "train_loop_s": loop["end"] - loop["begin"],
            "gradient_checkpointing": args.gradient_checkpointing, "reward_mean_per_step": rewards}


# --------------------------------------------------------------------------------------------
# Orchestration and report
# --------------------------------------------------------------------------------------------

def run_child(side: str, spec: dict[str, Any], workdir: Path, index: int) -> dict[str, Any]:
    run_dir = workdir / f"{index:02d}-{side}"
    run_dir.mkdir(parents=True, exist_ok=True)
    spec_path, result_path, log_path = run_dir / "spec.json", run_dir / "result.json", run_dir / "log.txt"
    spec_path.write_text(json.dumps({**spec, "workdir": str(run_dir)}), encoding="utf-8")
    window: dict[str, Any] = {}
    with measured(window), log_path.open("w", encoding="utf-8") as log:
        proc = subprocess.run([sys.executable, "-m", "bench.rl", "--side", side, "--spec", str(spec_path),
                               "--result", str(result_path)], cwd=ROOT, env=child_env(spec["threads"]),
                              stdout=log, stderr=subprocess.STDOUT)
    process = {"key": side, "log": str(log_path), "process_s": window["block_wall_s"],
               "loadavg_start": window["loadavg_start"], "loadavg_end": window["loadavg_end"]}
    if proc.returncode != 0 or not result_path.is_file():
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
        print(f"  {side}: FAILED (exit {proc.returncode}); log {log_path}:\n{tail}", flush=True)
        return {**process, "ok": False, "log_tail": tail}
    result = {**json.loads(result_path.read_text(encoding="utf-8")), **process, "ok": True}
    print(f"  {side}: {result['steps']} steps, {result['completions_per_s']:.3f} completions/s, wall "
          f"{result['wall_s']:.1f} s (loop {result['train_loop_s']:.1f} s), peak RSS "
          f"{result['peak_rss_bytes'] / GB:.2f} GB, load {window['loadavg_start'][0]:.2f} -> "
          f"{window['loadavg_end'][0]:.2f}", flush=True)
    return result


def summarise(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per side, medians over its repeats."""
    out: dict[str, dict[str, Any]] = {}
    for side in dict.fromkeys(r["key"] for r in results):
        good = [r for r in results if r["key"] == side and r.get("ok")]
        if not good:
            out[side] = {"ok": False}
            continue

        def med(field: str) -> float:
            return statistics.median(r[field] for r in good)

        out[side] = {"ok": True, "runs": len(good), "completions_per_s": med("completions_per_s"),
                     "loop_completions_per_s": statistics.median(r["completions"] / r["train_loop_s"] for r in good),
                     "peak_rss_bytes": med("peak_rss_bytes"), "wall_s": med("wall_s"), "cpu_s": med("cpu_s"),
                     "walls": [round(r["wall_s"], 1) for r in good],
                     "loadavg": [[r["loadavg_start"][0], r["loadavg_end"][0]] for r in good]}
    return out


def ppo_breakdown(results: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Seconds per optimizer step in each part of PPO (first successful run), and the share outside generation."""
    run = next((r for r in results if r["key"] == "ours-ppo" and r.get("ok")), None)
    if run is None:
        return None
    spent, steps = run["time_spent"], run["steps"]
    parts = {"generation": spent.get("time/generation_s", 0.0), "reward": spent.get("time/reward_s", 0.0),
             "old log-probs": spent.get("time/old_logps_s", 0.0), "reference": spent.get("time/reference_s", 0.0),
             "critic values": spent.get("time/critic_s", 0.0)}
    parts["update (rest of the loop)"] = run["train_loop_s"] - sum(parts.values())
    total = run["train_loop_s"]
    return {"steps": steps, "loop_s": total, "per_step_s": {k: v / steps for k, v in parts.items()},
            "share": {k: v / total for k, v in parts.items()}, "outside_generation_share": 1 - parts["generation"] / total}


def report(summary: dict[str, dict[str, Any]], breakdown: dict[str, Any] | None) -> str:
    lines = ["| side | completions/s (end to end) | completions/s (training loop) | peak RSS GB | wall s | CPU s |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for side, s in summary.items():
        if side == "ours-ppo" or not s.get("ok"):
            continue
        lines.append(f"| {LABELS[side]} | {s['completions_per_s']:.3f} | {s['loop_completions_per_s']:.3f} "
                     f"| {s['peak_rss_bytes'] / GB:.2f} | {'/'.join(map(str, s['walls']))} | {s['cpu_s']:.1f} |")
    ours = summary.get("ours-grpo", {})
    for trl_key in ("trl-grpo", "trl-grpo-no-ckpt"):
        trl = summary.get(trl_key, {})
        if ours.get("ok") and trl.get("ok"):
            speed = ours["completions_per_s"] / trl["completions_per_s"]
            rss = ours["peak_rss_bytes"] / trl["peak_rss_bytes"]
            lines.append(f"- vs {LABELS[trl_key]}: completions/s **{speed:.2f}x** (target >= {TARGETS['speed']}x: "
                         f"{'met' if speed >= TARGETS['speed'] else 'MISSED'}), peak RSS **{rss:.0%}** (target <= "
                         f"{TARGETS['rss_share']:.0%}: {'met' if rss <= TARGETS['rss_share'] else 'MISSED'})")
    if breakdown:
        share = breakdown["outside_generation_share"]
        lines += ["", f"PPO, {breakdown['steps']} optimizer steps, seconds per step:", "",
                  "| part | s/step | share |", "| --- | ---: | ---: |"]
        lines += [f"| {k} | {v:.2f} | {breakdown['share'][k]:.0%} |" for k, v in breakdown["per_step_s"].items()]
        lines.append(f"- time outside generation: **{share:.0%}** of the loop (target <= "
                     f"{TARGETS['ppo_outside_generation']:.0%}: "
                     f"{'met' if share <= TARGETS['ppo_outside_generation'] else 'MISSED'})")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="HH-RLHF (or any importable) file")
    p.add_argument("--prompts", type=int, default=8, help="prompts written for both sides")
    p.add_argument("--steps", type=int, default=3, help="optimizer steps per GRPO side")
    p.add_argument("--ppo-steps", type=int, default=8, help="PPO optimizer steps (4 per rollout, its default)")
    p.add_argument("--batch-prompts", type=int, default=2, help="prompts per step (x K completions)")
    p.add_argument("--k", type=int, default=4, help="completions per prompt (GRPO)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--lora-alpha", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--beta", type=float, default=0.04)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch threads per side")
    p.add_argument("--sides", default=",".join(SIDES), help=f"comma-separated, of {', '.join(SIDES)}")
    p.add_argument("--repeats", type=int, default=1, help="repeat every side, reversing the order each time")
    p.add_argument("--workdir", type=Path, default=None)
    add_json_option(p, "rl")
    p.add_argument("--side", default=None, help=argparse.SUPPRESS)
    p.add_argument("--spec", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.side:
        spec = json.loads(args.spec.read_text(encoding="utf-8"))
        args.result.write_text(json.dumps(run_side(args.side, spec), indent=2), encoding="utf-8")
        return 0
    if not args.data.is_file():
        print(f"SKIP bench.rl: data file {args.data} not found; nothing was run.")
        return 0
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    unknown = [s for s in sides if s not in SIDES]
    if unknown:
        raise SystemExit(f"unknown side(s) {', '.join(unknown)}; expected {', '.join(SIDES)}")
    started = environment()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="prefstudio-bench-rl-"))
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "prompts.jsonl"
    n_prompts = prepare_prompts(args.data, data, args.prompts)
    spec = {"data": str(data), "steps": args.steps, "ppo_steps": args.ppo_steps, "batch_prompts": args.batch_prompts, "k": args.k,
            "max_new_tokens": args.max_new_tokens, "lora_r": args.lora_r, "lora_alpha": args.lora_alpha,
            "lr": args.lr, "beta": args.beta, "seed": args.seed, "threads": args.threads}
    print(f"bench.rl {time.strftime('%Y-%m-%d %H:%M')}: {n_prompts} HH-RLHF prompts, {args.steps} steps of "
          f"{args.batch_prompts} prompts x K={args.k}, <= {args.max_new_tokens} new tokens, LoRA r={args.lora_r}, "
          f"beta {args.beta}, fp32 CPU, {args.threads} threads; code {describe_code(started['code'])}; load average "
          f"{' '.join(f'{x:.2f}' for x in load_average())}; work dir {workdir}", flush=True)
    order = [side for repeat in range(args.repeats) for side in (sides if repeat % 2 == 0 else sides[::-1])]
    results = []
    for index, side in enumerate(order):
        print(f"[{index + 1}] {side} ...", flush=True)
        results.append(run_child(side, spec, workdir, index))
    summary, breakdown = summarise(results), ppo_breakdown(results)
    print()
    print(report(summary, breakdown))
    write_results(args.json, "rl", args, {"spec": spec, "prompts": n_prompts, "runs": results, "summary": summary,
                                          "ppo_breakdown": breakdown, "targets": TARGETS,
                                          "loadavg_per_run": {f"{i}-{r['key']}": [r["loadavg_start"], r["loadavg_end"]]
                                                              for i, r in enumerate(results)}}, started)
    return 0 if all(r.get("ok") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
