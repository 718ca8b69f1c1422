"""The steps every training method takes, in order; a method fills in only what is its own.

:func:`train` reads top to bottom:

1. **data**: the method's examples and their held-out split, recorded in ``split.json``
   (:meth:`Method.load_data`, :meth:`Method.split`);
2. **model**: the trainable model, a LoRA policy by default (:meth:`Method.load_model`);
3. **reference** (optional): per-example reference log-probs of the model with its adapter off,
   computed once and cached in the run folder (when :attr:`Method.uses_reference`);
4. **loop**: :func:`alignment.training.loop.fit` over batches from :meth:`Method.collate`, or from
   :meth:`Method.rollout` for methods that generate their batches, with :meth:`Method.loss`;
5. **held-out evaluation** (:meth:`Method.evaluate`);
6. **save and emit**: adapter, tokenizer, config and ``metrics.json``, then the ``save`` and
   ``train_end`` events.

A method is a subclass of :class:`Method`, made per run from its config. It supplies

* ``name`` (the run's method in events and checkpoints) and ``forward`` (``forward(model, **batch)
  -> rows``, e.g. :func:`policy_logps`: one summed log-prob per completion);
* :meth:`~Method.load_data` -> :class:`Data` (``train`` / ``held_out`` example lists, and ``info``:
  counts that go into the ``train_begin`` event and ``metrics.json``);
* :meth:`~Method.make_batch` (a list of examples -> model inputs, see
  :data:`alignment.training.loop.MODEL_INPUTS`) and :meth:`~Method.split_rows` (the ``forward``
  rows of a batch -> one tensor per example), used by the reference pass and the evaluation;
* :meth:`~Method.loss`: ``(forward, batch) -> (mean loss, float metrics)``, the method's equation;
  ``self.reference`` holds the cached reference rows (``{"train": [N, K], "eval": [M, K]}``);
* :meth:`~Method.eval_metrics`: the held-out metrics from the held-out rows.

Methods that generate their data (PPO, GRPO). The loop walks ``range(len(data.train))`` in seeded,
resumable batches, whatever the examples are. For a rollout method they are prompts: it sets
``rollouts = True`` and ``uses_reference = False`` (its KL term needs the reference on freshly
sampled tokens, so it scores them itself, e.g. under ``model.disable_adapter()``), and overrides
:meth:`Method.rollout` ``(model, indices, forward_size) -> [(batch, share), ...]``, which the
loop then calls in place of :meth:`Method.collate`, once per step for all of the step's prompts
(sampling them together is what keeps generation fast): the current policy is in eval mode and
gradients are off there, so it can sample completions, score them (a reward model, the
reference), compute advantages and return the tensors :meth:`Method.loss` needs
(``old_logps``, ``advantages``, ...), cut into forward chunks of ``forward_size``
(``micro_batch_size``) prompts with each chunk's share of the batch; the loop puts the policy back
in train mode for the loss. A chunk holds whole prompts, so a GRPO group (all samples of one
prompt) is never split across chunks. A method that takes several optimisation steps per rollout
keeps the rollout in its own state and samples again when it is used up. :meth:`Method.evaluate` can be
overridden as well (e.g. mean reward of greedy answers to the held-out prompts) when there are no
fixed held-out rows to score. Extra run files (a rollout log) are named in
:attr:`Method.checkpoint_files`.

Example: DPO's whole part (:class:`alignment.training.dpo.DPO`; :class:`PairMethod` brings the
pairs, their batches and their rows)::

    class DPO(PairMethod):
        name = "dpo"
        uses_reference = True

        def loss(self, forward, batch):
            chosen, rejected = forward(**model_inputs(batch)).view(-1, 2).unbind(-1)
            ref = self.reference["train"][batch["index"].cpu()].to(chosen.device)
            out = dpo_loss(chosen, rejected, ref[:, 0], ref[:, 1], beta=self.config.beta, ...)
            return out.loss, out.metrics()

        def eval_metrics(self, rows):
            return dpo_metrics(torch.stack(rows), self.reference["eval"], self.config)

    train_result = train(DPO(config), callbacks)
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from alignment.logprobs import packed_completion_logps
from alignment.run_folder import PROGRESS_FILE, REFERENCE_FILE
from alignment.training.callbacks import REFERENCE_PHASE, ProgressFile, as_callbacks, emit, phase_progress
from alignment.training.data import PreferencePair, PromptCache, load_pairs, pair_batch
from alignment.training.heldout import split_for_run
from alignment.training.lora import TrainableModel, load_policy
from alignment.training.distributed import check_backend, rows_over_processes
from alignment.training.loop import (
    Task, TrainResult, fit, make_accelerator, prepare_run_dir, rows_per_item, save_final,
)
from alignment.training.reference import cached_reference_logps


def policy_logps(model: Any, **batch: Tensor) -> Tensor:
    """Summed log-prob of every completion of a shared-prefix batch (the forward the loop trains through)."""
    return packed_completion_logps(model, **batch)


@dataclass
class Data:
    """A method's examples: what it trains on, what it holds out, and counts worth reporting."""

    train: Sequence[Any]
    held_out: Sequence[Any]
    info: dict[str, Any] = field(default_factory=dict)  # e.g. {"dropped_ties": 3}


class Method:
    """One training method's own part of :func:`train` (see the module docstring)."""

    name: ClassVar[str]
    forward: ClassVar[Any] = staticmethod(policy_logps)
    #: Whether step (3) computes reference rows of every example (``self.reference``).
    uses_reference: ClassVar[bool] = False
    #: Whether the method samples each batch from the policy (:meth:`rollout`) instead of
    #: collating fixed examples (:meth:`collate`).
    rollouts: ClassVar[bool] = False
    #: Run-folder files copied into each checkpoint (the reference cache is added when used).
    checkpoint_files: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Any) -> None:
        self.config = config
        self.run_dir: Path | None = None
        self.data: Data | None = None
        self.trainable: TrainableModel | None = None
        self.render: PromptCache | None = None
        self.reference: dict[str, Tensor] = {}
        self.accelerator: Any = None  # set by train(): which process this is, of how many

    # (1) and (2) ---------------------------------------------------------------------------
    def load_data(self) -> Data:
        """The examples, split with :meth:`split` (or a split of the method's own)."""
        raise NotImplementedError

    def split(self, items: Sequence[Any], **info: Any) -> Data:
        """``items`` split by prompt into train and held-out, the split recorded in the run folder
        (``split.json``, :func:`alignment.training.heldout.split_for_run`)."""
        return Data(*split_for_run(items, self.config, self.run_dir), info)

    def load_model(self) -> TrainableModel:
        return load_policy(self.config)

    @property
    def tokenizer(self) -> Any:
        return self.trainable.tokenizer

    # Batches ---------------------------------------------------------------------------------
    def make_batch(self, items: Sequence[Any]) -> dict[str, Tensor]:
        raise NotImplementedError

    def split_rows(self, rows: Tensor, batch: dict[str, Tensor]) -> list[Tensor]:
        raise NotImplementedError

    # (4) -------------------------------------------------------------------------------------
    def collate(self, indices: list[int]) -> dict[str, Tensor]:
        """The training examples at ``indices`` as one batch, with their ``"index"`` (reference lookup)."""
        batch = self.make_batch([self.data.train[i] for i in indices])
        batch["index"] = torch.tensor(indices)
        return batch

    def rollout(self, model: Any, indices: list[int], forward_size: int) -> list[tuple[dict[str, Tensor], float]]:
        """A rollout method's batch for the prompts at ``indices``, sampled from ``model`` (the policy
        being trained, in eval mode, gradients off), as forward chunks of about ``forward_size``
        prompts with their shares of the batch; used in place of :meth:`collate` when
        :attr:`rollouts` is set."""
        raise NotImplementedError

    def loss(self, forward: Any, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        raise NotImplementedError

    # (5) -------------------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        """Held-out metrics: ``forward`` over the held-out examples, then :meth:`eval_metrics`."""
        held_out = self.data.held_out
        if not held_out:
            return {}
        rows = rows_over_processes(self.accelerator, held_out, lambda items, progress: rows_per_item(
            self.trainable.model, self.forward, items, self.make_batch, self.split_rows, self.config.batch_size,
            self.trainable.device, progress))
        return self.eval_metrics(rows)

    def eval_metrics(self, rows: list[Tensor]) -> dict[str, float]:
        raise NotImplementedError

    # (6) -------------------------------------------------------------------------------------
    def save(self, run_dir: Path) -> None:
        """Files of the method's own beside the adapter (e.g. PPO's value head), in the final run
        folder and in each checkpoint; nothing by default."""


class PairMethod(Method):
    """A method trained on preference pairs (DPO, the reward model): each pair's chosen and rejected
    completions are two rows of one shared-prefix batch, ``[chosen_0, rejected_0, chosen_1, ...]``."""

    def load_data(self) -> Data:
        """The pairs of ``config.data``, held out by prompt."""
        return self.split(load_pairs(self.config.data))

    def make_batch(self, items: Sequence[PreferencePair]) -> dict[str, Tensor]:
        return pair_batch(self.tokenizer, items, self.config.max_length, self.render)

    def split_rows(self, rows: Tensor, batch: dict[str, Tensor]) -> list[Tensor]:
        """A pair batch's rows -> one ``[chosen, rejected]`` per pair."""
        return list(rows.detach().view(-1, 2))


def train(method: Method, callbacks: Iterable[Any] = ()) -> TrainResult:
    """Run ``method``'s training: the six steps of the module docstring, in order."""
    config, name = method.config, method.name
    # Under `accelerate launch` this is one of several processes: each does its share of the work
    # below, and only the main one writes the run folder and hears events (its listeners' files and
    # bars are the run's).
    accelerator = method.accelerator = make_accelerator(config.resolved_device())
    check_backend(accelerator, config)
    main = accelerator.is_main_process
    run_dir = prepare_run_dir(config, main)
    callbacks = [ProgressFile(run_dir / PROGRESS_FILE), *as_callbacks(callbacks)] if main else []

    # (1) Data: the method's examples and the held-out split (recorded in split.json).
    method.run_dir = run_dir
    data = method.data = method.load_data()
    counts = {"n_train": len(data.train), "n_eval": len(data.held_out), **data.info,
              "processes": accelerator.num_processes}

    # (2) Model: a fresh copy of the base weights with LoRA adapters (the only trainable weights).
    trainable = method.trainable = method.load_model()
    method.render = PromptCache(trainable.tokenizer)

    # (3) Reference rows: one pass with the adapter disabled, cached in the run folder.
    begin_info = {"n_eval": len(data.held_out), **data.info, "processes": accelerator.num_processes}
    checkpoint_files = list(method.checkpoint_files)
    if method.uses_reference:
        method.reference, source = cached_reference_logps(
            trainable.model, data.train, data.held_out, method.make_batch, method.split_rows, config=config,
            base_location=trainable.base_location, run_dir=run_dir, device=trainable.device,
            accelerator=accelerator, progress=phase_progress(callbacks, REFERENCE_PHASE))
        counts["reference"] = source
        begin_info.update(reference=source, reference_examples=len(data.train) + len(data.held_out))
        checkpoint_files.append(REFERENCE_FILE)

    # (4) Train: seeded batches of example indices, the method's loss.
    task = Task(name=name, n_train=len(data.train), collate=method.collate, loss=method.loss,
                checkpoint_files=checkpoint_files, begin_info=begin_info,
                rollout=method.rollout if method.rollouts else None, save_extra=method.save)
    result = fit(config, trainable.model, method.forward, task, callbacks, run_dir, accelerator)

    # (5) Evaluate on the held-out examples.
    eval_metrics = method.evaluate()
    if eval_metrics:
        emit(callbacks, "eval", result.state(name, loss=eval_metrics.get("loss"), metrics=eval_metrics))

    # (6) Save: adapter, tokenizer, resolved config, metrics; then tell the listeners.
    loss = result.metrics.get("loss")
    if main:
        save_final(run_dir, trainable.model, trainable.tokenizer, config, result.steps, result.metrics,
                   eval_metrics, counts)
        method.save(run_dir)
        emit(callbacks, "save", result.state(name, loss=loss, metrics=result.metrics, path=str(run_dir),
                                             kind="final"))
    emit(callbacks, "train_end", result.state(name, loss=loss, metrics=result.metrics, eval_metrics=eval_metrics))
    return TrainResult(out_dir=run_dir, steps=result.steps, metrics=result.metrics, eval_metrics=eval_metrics)
