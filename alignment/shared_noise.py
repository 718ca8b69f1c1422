"""Shared-noise sampling: every row of a batch draws with the same random numbers.

Sampling draws its randomness from a generator seeded with the comparison's seed, one noise
vector per step added to every row (Gumbel-max sampling:
``argmax(logits / T + Gumbel noise)`` after top-p filtering, which samples exactly from the
temperature / top-p distribution). Every model thus sees the same random numbers ("common random
numbers"), in a batch of any size as alone: identical models give identical answers,
differences between answers come from the models rather than the dice, and a model's answer in a
batch is the one it gives alone with that seed, up to floating-point differences between batch
shapes. (Plain ``generate(do_sample=True)`` would draw all rows from one stream, so row i of a
batch would get other numbers than the same model alone.) The seeded
stream is not the one :class:`alignment.sampling.TransformersBackend` uses, so an answer here need
not equal the annotation queue's sample with the same seed.
"""
from __future__ import annotations

import torch
from torch import Tensor


class SharedNoiseSampling:
    """A logits processor that turns greedy search into sampling with the same random numbers in every row.

    Gumbel-max: with ``E ~ Exp(1)`` i.i.d. per vocabulary entry, ``argmax(scores - log E)`` is a
    draw from ``softmax(scores)`` (Gumbel 1954; ``-log E`` is standard Gumbel noise). The numbers
    come from a generator seeded with the comparison's seed, one vector per step shared by every
    row: each row (model) sees at step t the numbers it sees alone with that seed, in a batch of
    any size. (It is the stream of one seeded generator per row, drawn once instead of per row.)
    """

    def __init__(self, seed: int, device: str | torch.device) -> None:
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        noise = torch.empty(scores.shape[-1], device=scores.device, dtype=torch.float32)
        return scores.float() - noise.exponential_(generator=self.generator).log()

