"""The config dataclass of each training method, and those of best-of-N and evaluation, reachable
without loading the training stack (torch, transformers): what the command line needs to build its
flags, defaults and help."""
from __future__ import annotations

from alignment.run_configs import EVAL_MAX_PROMPTS, BestOfNConfig, EvalConfig  # noqa: F401  (for app.py)
from alignment.training.config import METHODS, CommonConfig

#: CLI / job-kind names that differ from the config's method name.
_ALIASES = {"rm": "reward", "pl-dpo": "pl_dpo"}


def config_class(method: str) -> type[CommonConfig]:
    """The dataclass whose fields are ``method``'s settings (``KeyError`` for an unknown method)."""
    return METHODS[_ALIASES.get(method, method)]
