#!/usr/bin/env python
"""prefstudio: collect human preferences on LLM outputs and turn them into training data.

    python app.py serve                      # the web UI on http://127.0.0.1:7860
    python app.py import FILE --project P    # prompts or preference pairs into a project
    python app.py export OUT --project P     # labels as TRL / listwise / ratings / SFT data
    python app.py generate --project P       # sample K responses for prompts, headless
    python app.py train dpo --project P --out runs/dpo   # LoRA DPO / reward model / listwise DPO
    python app.py users add NAME --role admin   # accounts: from then on every page needs a login

Every subcommand takes --db (a file path or an SQLAlchemy URL; default data/prefstudio.db).
"""
from __future__ import annotations

import os

# Before gradio or huggingface_hub are imported: no telemetry, no hub calls at run time.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import errno
import logging
import sys

DB_HELP = "database: a file path or an SQLAlchemy URL (default: data/prefstudio.db)"
MODEL_HELP = ("'default' (embedded SmolLM2-135M-Instruct), an HF model id, a local folder or a .gguf file; "
              "for generation also openai:http://HOST:PORT/v1#MODEL (an OpenAI-compatible server)")
EXPORT_FORMATS = ["trl", "trl-chat", "listwise", "ratings", "sft", "pairs-from-rankings"]
IMPORT_FORMATS = ["jsonl", "csv", "parquet", "datasets", "hh", "trl"]


#: Online RL methods: their knobs come from their config dataclasses (alignment.training.config).
ONLINE_RL = ("ppo", "grpo")


def add_config_arguments(parser: argparse.ArgumentParser, methods: tuple[str, ...]) -> None:
    """One ``--flag`` per field of the methods' config dataclasses that the parser lacks, with the
    field's help text, default and the methods it applies to (unset flags stay None)."""
    from dataclasses import fields

    from annotation.services.method_configs import config_class

    known = {action.dest for action in parser._actions}
    owners: dict[str, dict] = {}  # field name -> {method: its field}
    for method in methods:
        for f in fields(config_class(method)):
            if f.name not in known:
                owners.setdefault(f.name, {})[method] = f
    for name, by_method in owners.items():
        f = next(iter(by_method.values()))
        defaults = {m: _shown(g.default) for m, g in by_method.items()}
        shown = (", ".join(f"{m}: {d}" for m, d in defaults.items()) if len(set(defaults.values())) > 1
                 else next(iter(defaults.values())))
        text = f"{f.metadata.get('help', '')} [{'/'.join(by_method)}; default {shown}]".replace("%", "%%")
        kwargs: dict = {"default": None, "help": text}
        kind = str(f.type)
        if kind.startswith("list"):
            kwargs.update(action="append", metavar=name.upper())
        elif kind.startswith("bool"):
            kwargs.update(type=_boolean, metavar="true|false")
        elif kind.startswith("int"):
            kwargs["type"] = int
        elif kind.startswith("float"):
            kwargs["type"] = float
        parser.add_argument(f"--{name.replace('_', '-')}", **kwargs)


def add_field_argument(parser: argparse.ArgumentParser, config_class, name: str, **kwargs) -> None:
    """``--name`` for one field of a settings dataclass, with that field's default and help text, so
    a default is written once (in the dataclass) and the CLI cannot drift from the jobs."""
    from dataclasses import MISSING, fields

    f = next(f for f in fields(config_class) if f.name == name)
    default = None if f.default is MISSING else f.default
    kind = {"int": int, "float": float}.get(str(f.type).split(" ")[0], str)
    text = f"{f.metadata.get('help', '')} (default {_shown(default)})".replace("%", "%%")
    parser.add_argument(f"--{name.replace('_', '-')}", **{"type": kind, "default": default, "help": text, **kwargs})


def _shown(default) -> str:
    return "empty" if default is None or default == () else str(default)


def _boolean(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    from annotation.services.method_configs import EVAL_MAX_PROMPTS, BestOfNConfig, EvalConfig  # no torch

    parser = argparse.ArgumentParser(prog="app.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="start the web UI", description="Start the web UI and the background generator.")
    serve.add_argument("--db", default=None, help=DB_HELP)
    serve.add_argument("--model", default="default",
                       help=f"model for the starter project and new projects: {MODEL_HELP}")
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    serve.add_argument("--no-worker", action="store_true", help="do not generate in the background")
    serve.add_argument("--no-seed", action="store_true", help="do not create the starter project on an empty database")
    serve.add_argument("--runs", default=None,
                       help="folder for training run folders (default: runs/ next to the SQLite file)")
    serve.add_argument("--max-upload-mb", type=float, default=None,
                       help="largest file the web UI accepts for import (default 200)")
    serve.add_argument("--max-unzipped-mb", type=float, default=None,
                       help="most an imported .zip may unpack to (default 2048)")
    serve.add_argument("--min-label-seconds", type=float, default=None,
                       help="refuse a label given sooner after its item was shown (default 0.3: nobody reads faster; "
                            "scripts chaining submits do)")

    imp = sub.add_parser("import", help="import prompts or preference pairs",
                         description="Import a file into a project. All-or-nothing: any bad record and nothing "
                                     "is stored; every bad line is reported with its reason.")
    imp.add_argument("file", help="JSONL(.gz), CSV, Parquet file or a `datasets` folder")
    imp.add_argument("--db", default=None, help=DB_HELP)
    imp.add_argument("--project", default="starter", help="project to import into (default: starter)")
    imp.add_argument("--create", action="store_true", help="create the project (pairwise, K=2) if it does not exist")
    imp.add_argument("--format", choices=IMPORT_FORMATS, default=None,
                     help="file format / schema (default: detect from the file)")
    imp.add_argument("--skip-invalid", action="store_true",
                     help="store the valid records and list the bad ones, instead of refusing the whole file")

    exp = sub.add_parser("export", help="export labels for training",
                         description="Export a project's labels in TRL's formats.")
    exp.add_argument("out", help="output .jsonl file, or a folder with --datasets")
    exp.add_argument("--db", default=None, help=DB_HELP)
    exp.add_argument("--project", default="starter", help="project to export (default: starter)")
    exp.add_argument("--format", choices=EXPORT_FORMATS, default="trl",
                     help="trl: prompt/chosen/rejected strings; trl-chat: conversational; listwise: prompt + "
                          "ordered completions; ratings; sft: rewrites as prompt/completion; "
                          "pairs-from-rankings: rankings expanded into pairs (default: trl)")
    exp.add_argument("--datasets", action="store_true", help="write a `datasets` folder instead of JSONL")
    exp.add_argument("--accepted-only", action="store_true",
                     help="only labels a reviewer accepted or corrected (corrected ones with the correction)")

    gen = sub.add_parser("generate", help="sample responses for a project's prompts",
                         description="Sample K responses for prompts that have none yet, and store them as "
                                     "items ready for labelling.")
    gen.add_argument("--db", default=None, help=DB_HELP)
    gen.add_argument("--project", default="starter", help="project (default: starter)")
    gen.add_argument("--model", default=None, help=f"{MODEL_HELP} (default: the project's model)")
    gen.add_argument("--k", type=int, default=None, help="responses per prompt (default: the project's K)")
    gen.add_argument("--limit", type=int, default=10, help="at most this many prompts (default 10)")
    gen.add_argument("--temperature", type=float, default=None, help="default: the project's")
    gen.add_argument("--top-p", type=float, default=None, help="default: the project's")
    gen.add_argument("--max-new-tokens", type=int, default=None, help="default: the project's")
    gen.add_argument("--seed", type=int, default=None, help="seed for reproducible sampling")

    train = sub.add_parser("train", help="train a reward model, DPO, listwise DPO, PPO or GRPO adapter (LoRA)",
                           description="Train in the foreground with a progress bar. The output folder is a "
                                       "standard PEFT adapter (PeftModel.from_pretrained loads it) with the "
                                       "resolved config, metrics and progress log.")
    train.add_argument("method", choices=["rm", "dpo", "pl-dpo", *ONLINE_RL],
                       help="rm: Bradley-Terry reward model; dpo: DPO; pl-dpo: Plackett-Luce listwise DPO; "
                            "ppo / grpo: online RL from a reward on a project's prompts or --prompts FILE")
    train.add_argument("--db", default=None, help=DB_HELP)
    train.add_argument("--project", default=None, help="train on this project's labels (snapshotted into OUT)")
    train.add_argument("--data", default=None, help="or a TRL-format JSONL (listwise JSONL for pl-dpo)")
    train.add_argument("--accepted-only", action="store_true",
                       help="with --project: train only on labels a reviewer accepted or corrected")
    train.add_argument("--out", required=True, help="output folder")
    train.add_argument("--model", default=None, help=f"base model: {MODEL_HELP} (default: default)")
    train.add_argument("--epochs", type=int, default=None, help="passes over the data (default 1)")
    train.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")
    train.add_argument("--lr", type=float, default=None, help="learning rate (default 1e-4)")
    train.add_argument("--beta", type=float, default=None, help="DPO / PL-DPO beta (default 0.1)")
    train.add_argument("--loss", choices=["sigmoid", "ipo", "hinge"], default=None, help="DPO loss (default sigmoid)")
    train.add_argument("--lora-r", type=int, default=None, help="LoRA rank (default 16)")
    train.add_argument("--batch-size", type=int, default=None, help="examples per batch (default 4)")
    train.add_argument("--max-length", type=int, default=None, help="max prompt+response tokens (default 512)")
    train.add_argument("--eval-fraction", type=float, default=None, help="held-out share (default 0.1)")
    train.add_argument("--save-steps", type=int, default=None, help="checkpoint every N steps")
    train.add_argument("--resume-from", default=None, help="checkpoint folder to continue from")
    train.add_argument("--seed", type=int, default=None, help="seed (default 0)")
    train.add_argument("--processes", type=int, default=1,
                       help="train in N processes (accelerate launch; one per GPU, or sharing the CPU cores); "
                            "--batch-size is per process (default 1)")
    train.add_argument("--prompts", default=None, help="ppo / grpo: a prompt JSONL ('prompt' or chat 'messages' "
                                                       "per row), instead of --project")
    add_config_arguments(train, ONLINE_RL)

    bon = sub.add_parser("bon", help="best-of-N: sample N responses per prompt, keep the reward model's pick",
                         description="Sample N responses per prompt from a policy (a model, optionally with a LoRA "
                                     "adapter), score them with a trained reward model and write one JSONL row per "
                                     "prompt: prompt, completions, scores, best, best_index.")
    bon.add_argument("--reward", required=True, help="reward model folder (the --out of `train rm`)")
    bon.add_argument("--model", default=None,
                     help=f"policy: {MODEL_HELP} (default: the adapter's base model, else default)")
    bon.add_argument("--adapter", default=None,
                     help="LoRA adapter folder for the policy (e.g. the --out of `train dpo`)")
    bon.add_argument("--prompts", required=True,
                     help="prompt file in any format `import` reads (prompts, or pairs whose prompts are used); "
                          "a file with a bad record is refused")
    bon.add_argument("--out", required=True, help="output .jsonl file")
    for name in ("n", "temperature", "top_p", "max_new_tokens", "seed"):
        add_field_argument(bon, BestOfNConfig, name)

    ev = sub.add_parser("eval", help="evaluate a tuned adapter against its base model with a reward model",
                        description="The base model and the tuned adapter answer the same held-out prompts with the "
                                    "same seed; a reward model scores both. Prints the win rate vs base (with a "
                                    "95%% bootstrap interval), mean reward, length and KL to the base, and the "
                                    "reward model's agreement with the held-out human pairs; writes one row per "
                                    "prompt (evaluation.jsonl) and metrics.json into --out.")
    ev.add_argument("--adapter", required=True, help="the tuned LoRA adapter folder (the --out of `train dpo`)")
    ev.add_argument("--reward", required=True, help="reward model folder (the --out of `train rm`)")
    ev.add_argument("--model", default=None, help=f"base model: {MODEL_HELP} (default: the adapter's base model)")
    ev.add_argument("--prompts", default=None,
                    help="prompt file in any format `import` reads (default: the prompts the adapter's training "
                         "held out)")
    ev.add_argument("--max-prompts", type=int, default=EVAL_MAX_PROMPTS,
                    help=f"evaluate at most this many prompts (default {EVAL_MAX_PROMPTS})")
    ev.add_argument("--out", required=True, help="output folder")
    for name in ("temperature", "top_p", "max_new_tokens", "seed"):
        add_field_argument(ev, EvalConfig, name)
    db_cmd = sub.add_parser("db", help="database maintenance: copy a whole database to another engine",
                            description="Database maintenance.")
    db_sub = db_cmd.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    copy = db_sub.add_parser("copy", help="copy every row into an empty database (SQLite <-> PostgreSQL)",
                             description="Copy everything (projects, prompts, items, responses, labels, jobs, "
                                         "snapshots, trained-model rows) from one database into another, in one "
                                         "transaction on the target, and print both sides' row counts. The target "
                                         "(a path or an SQLAlchemy URL) is created and migrated if new, and refused "
                                         "if it holds any row. Stop `serve` on the source first.")
    copy.add_argument("--from", dest="source", required=True, help="source database: a file path or an SQLAlchemy URL")
    copy.add_argument("--to", dest="target", required=True, help="target database: a file path or an SQLAlchemy URL")
    add_users_parser(sub)
    return parser


def add_users_parser(sub) -> None:
    users = sub.add_parser("users", help="accounts: add users, set passwords, project membership",
                           description="Accounts. Once one user has a password, `serve` asks everyone to log in "
                                       "(on any host); before that it is single-user local mode on 127.0.0.1. "
                                       "Passwords are prompted for, or read from standard input (one line) when "
                                       "that is not a terminal.")
    users.add_argument("--db", default=None, help=DB_HELP)
    actions = users.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="add a user with a password", description="Add a user with a password.")
    add.add_argument("name")
    add.add_argument("--role", required=True, help="admin, annotator or reviewer")
    add.add_argument("--project", action="append", default=[], metavar="PROJECT",
                     help="make the user a member of this project (repeat for several)")
    listing = actions.add_parser("list", help="list users, their roles and projects")
    passwd = actions.add_parser("passwd", help="set a user's password (ends their sessions)")
    passwd.add_argument("name")
    role = actions.add_parser("role", help="change a user's role")
    role.add_argument("name")
    role.add_argument("role", help="admin, annotator or reviewer")
    member = actions.add_parser("member", help="add a user to a project (or --remove them)")
    member.add_argument("name")
    member.add_argument("project")
    member.add_argument("--remove", action="store_true", help="end the membership instead")
    for action in (add, listing, passwd, role, member):
        action.add_argument("--db", default=argparse.SUPPRESS, help=DB_HELP)


def read_password(confirm: bool = True) -> str:
    """From the terminal without echo (twice), or the first line of standard input (scripts, CI)."""
    import getpass

    from annotation.auth.passwords import same_password

    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    password = getpass.getpass("Password: ")
    if confirm and password:
        same_password(password, getpass.getpass("Password again: "))
    return password


def cmd_users(args) -> int:
    from annotation.auth import accounts
    from annotation.services import open_database

    db = open_database(args.db)
    if args.users_command == "list":
        rows = accounts.user_rows(db)
        if not rows:
            print("no users yet: `python app.py users add NAME --role admin` creates the first admin")
            return 0
        width = max(len("name"), *(len(r.name) for r in rows))
        print(f"{'name':<{width}}  {'role':<9}  {'login':<5}  projects")
        for r in rows:
            print(f"{r.name:<{width}}  {r.role:<9}  {'yes' if r.can_log_in else 'no':<5}  {', '.join(r.projects) or '-'}")
    elif args.users_command == "add":
        accounts.check_new_user(db, args.name, args.role, tuple(args.project))
        accounts.add_user(db, args.name, args.role, read_password(), tuple(args.project))
        member = f", member of {', '.join(args.project)}" if args.project else ""
        print(f"added {args.role} {args.name.strip()!r}{member}")
    elif args.users_command == "passwd":
        accounts.check_user(db, args.name)
        accounts.set_password(db, args.name, read_password())
        print(f"password of {args.name.strip()!r} changed; their sessions were ended")
    elif args.users_command == "role":
        accounts.set_role(db, args.name, args.role)
        print(f"{args.name.strip()!r} is now {args.role}")
    elif args.remove:
        gone = accounts.remove_membership(db, args.name, args.project)
        print(f"{args.name.strip()!r} {'left' if gone else 'was not a member of'} {args.project!r}")
    else:
        added = accounts.add_membership(db, args.name, args.project)
        print(f"{args.name.strip()!r} {'is now' if added else 'already was'} a member of {args.project!r}")
    return 0


def cmd_db(args) -> int:
    from annotation.services.data import copy_database

    print(copy_database(args.source, args.target).summary())
    return 0


def cmd_train(args) -> int:
    from annotation.services import InputError
    from annotation.services.allocator import rerun_with_jemalloc
    from annotation.services.launching import launched, process_count, process_rank

    if launched() and args.project:
        raise InputError("under accelerate launch every process would snapshot the project: give --data, or "
                         "use `app.py train ... --processes N`, which snapshots it once and launches them")
    launching = args.processes > 1 and not launched()  # this process only starts the training ones
    if sys.argv and sys.argv[0].endswith("app.py") and not launching:
        rerun_with_jemalloc([sys.executable, *sys.argv])  # returns only when jemalloc is absent or loaded
    from annotation.services import open_database
    from annotation.services.training import SnapshotFilters, headless_config, train_headless

    values = {"out": args.out, "data": args.data, "model": args.model, "epochs": args.epochs,
              "max_steps": args.max_steps, "lr": args.lr, "lora_r": args.lora_r, "batch_size": args.batch_size,
              "max_length": args.max_length, "eval_fraction": args.eval_fraction, "save_steps": args.save_steps,
              "resume_from": args.resume_from, "seed": args.seed,
              "processes": process_count() if launched() else args.processes}
    if args.method in ONLINE_RL:
        values.update(online_rl_values(args))
    elif args.method in ("dpo", "pl-dpo"):
        values["beta"] = args.beta
    elif args.beta is not None:
        print("note: --beta does not apply to a reward model; ignored", file=sys.stderr)
    if args.method == "dpo":
        values["loss"] = args.loss
    db = open_database(args.db) if args.project else None
    filters = SnapshotFilters(accepted_only=args.accepted_only)
    if launching:
        return launch_training(args, headless_config(args.method, values, db=db, project=args.project,
                                                     filters=filters))
    result = train_headless(args.method, values, db=db, project=args.project, filters=filters)
    if process_rank() == 0:
        print(f"trained {args.method}: {result.steps} steps; adapter in {result.out_dir}")
        for name, value in sorted((result.eval_metrics or {}).items()):
            print(f"  held-out {name}: {value:.4f}")
    return 0


def launch_training(args, config) -> int:
    """`train ... --processes N`, its settings checked (and the project snapshotted) once, here: the same
    command in N processes under accelerate's launcher, reading the checked data file (`--data`)."""
    import subprocess

    from annotation.services.launching import launch_command

    argv = [*without_options(sys.argv[1:], ("--project", "--db", "--data")), "--data", config.data]
    return subprocess.call(launch_command(args.processes, [os.path.abspath(__file__), *argv]))


def without_options(argv: list[str], names: tuple[str, ...]) -> list[str]:
    """``argv`` without the options ``names`` and their values (``--name value`` or ``--name=value``)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg.split("=", 1)[0] in names:
            skip = "=" not in arg
        else:
            out.append(arg)
    return out


def online_rl_values(args) -> dict:
    """The config values of a ppo / grpo run given on the command line; a knob of the other method is refused."""
    from dataclasses import fields

    from annotation.services import InputError
    from annotation.services.method_configs import config_class

    own = {f.name for f in fields(config_class(args.method))}
    values = {"data": args.prompts or args.data}
    for method in ONLINE_RL:
        for f in fields(config_class(method)):
            value = getattr(args, f.name, None)
            if value is None or f.name in ("data", "out", "model") or f.name in values:
                continue
            if f.name not in own:
                raise InputError(f"--{f.name.replace('_', '-')} is a {method} setting; it does not apply to "
                                 f"{args.method}")
            values[f.name] = value
    return values


def cmd_serve(args) -> int:
    from annotation.server import serve

    serve(db=args.db, model=args.model, host=args.host, port=args.port, worker=not args.no_worker,
          seed=not args.no_seed, runs=args.runs, max_upload_mb=args.max_upload_mb,
          max_unzipped_mb=args.max_unzipped_mb, min_label_seconds=args.min_label_seconds)
    return 0


def cmd_import(args) -> int:
    from annotation.services.data import import_file
    from annotation.services import open_database

    db = open_database(args.db)
    result = import_file(db, args.file, args.project, fmt=args.format, create=args.create,
                         skip_invalid=args.skip_invalid)
    print(result.summary())
    return 0


def cmd_export(args) -> int:
    from annotation.services.data import export_labels
    from annotation.services import open_database

    db = open_database(args.db)
    result = export_labels(db, args.project, args.format, args.out, as_datasets=args.datasets,
                           accepted_only=args.accepted_only)
    print(result.summary())
    return 0


def cmd_generate(args) -> int:
    from tqdm import tqdm

    from annotation.generation import default_backend_factory, generate_items
    from annotation.services.projects import get_settings
    from annotation.services import open_database

    db = open_database(args.db)
    model = args.model or get_settings(db, args.project).model
    print(f"loading {model} ...", file=sys.stderr)
    backend = default_backend_factory(model)
    bar = tqdm(total=0, unit="prompt", desc="generating")

    def on_progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    result = generate_items(db, args.project, backend, args.limit, k=args.k, temperature=args.temperature,
                            top_p=args.top_p, max_new_tokens=args.max_new_tokens, seed=args.seed,
                            progress=on_progress, model_label=model)
    bar.close()
    print(f"generated {result.items} items ({result.responses} responses) in project {args.project!r}")
    return 0


class PromptBar:
    """A tqdm bar over prompts, opened at the first ``(done, total)`` call (after the models load)."""

    def __init__(self, desc: str) -> None:
        self.desc, self.bar = desc, None

    def __call__(self, done: int, total: int) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, unit="prompt", desc=self.desc)
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def cmd_bon(args) -> int:
    from annotation.services.best_of_n import run_best_of_n

    bar = PromptBar("best-of-n")
    run = run_best_of_n(args.prompts, args.reward, model=args.model, adapter=args.adapter, n=args.n,
                        temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
                        seed=args.seed, out=args.out, progress=bar)
    bar.close()
    print(f"best-of-{run.n}: {len(run.results)} prompts, {len(run.results) * run.n} completions scored; "
          f"rows in {args.out}")
    return 0


def cmd_eval(args) -> int:
    from annotation.jobs.evaluation import evaluate_headless, report_lines

    bar = PromptBar("eval")
    result = evaluate_headless(args.adapter, args.reward, args.out, model=args.model, prompts_file=args.prompts,
                               max_prompts=args.max_prompts, temperature=args.temperature, top_p=args.top_p,
                               max_new_tokens=args.max_new_tokens, seed=args.seed, progress=bar)
    bar.close()
    for line in report_lines(result):
        print(line)
    print(f"rows in {args.out}")
    return 0


COMMANDS = {"serve": cmd_serve, "import": cmd_import, "export": cmd_export, "generate": cmd_generate,
            "train": cmd_train, "bon": cmd_bon, "eval": cmd_eval, "db": cmd_db, "users": cmd_users}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from annotation.services import InputError

    try:
        return COMMANDS[args.command](args)
    except InputError as exc:
        print(input_error_report(exc), file=sys.stderr)
        return 2
    except Exception as exc:
        if not disk_full(exc):
            raise
        # A full disk is not a bug: say where, and what to do.
        written = getattr(exc, "filename", None) or getattr(args, "out", None)
        where = f" writing {written}" if written else ""
        print(f"error: no space left on the device{where}; free some space and run the command again",
              file=sys.stderr)
        return 1


def disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what caused it) is a full disk: an OSError, or the words of a library that
    writes through its own code (tokenizers and safetensors in Rust, SQLite)."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(words in str(exc) for words in ("No space left on device", "os error 28", "disk is full")):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def input_error_report(exc) -> str:
    """The lines a user reads for bad input: a refused file names itself, then each bad line."""
    errors = getattr(exc, "errors", None)  # an import refused record by record
    file = getattr(exc, "file", None)
    if not errors:
        return f"error: {exc}"
    file_level = getattr(exc, "file_level", None)
    if file_level is not None:
        return f"error: {file}: {file_level.reason}; nothing was imported"
    lines = [f"error: {file}: nothing was imported: {len(errors)} bad record(s) (fix them, or pass "
             f"--skip-invalid to store the valid ones and list the rest):"]
    lines += [f"  {error}" for error in errors]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
