"""LLM-as-judge: a local model says which of two responses to a conversation is better.

The judging prompt follows MT-Bench's default pairwise judge prompt (Zheng et al. 2023, "Judging
LLM-as-a-Judge with MT-Bench and Chatbot Arena", NeurIPS Datasets and Benchmarks, Figure 5): state the task, show the
conversation, then Response A and Response B between start/end markers. Instead of letting the
judge write an explanation and parsing "[[A]]" out of it, the judge is asked for a single letter and
we read its next-token distribution right after the assistant tag:

    P(A wins | order) = p("A") / (p("A") + p("B"))

where p(letter) sums the probability of every token that spells the letter (with or without a
leading space, as the tokenizer encodes it there). Reading logits is deterministic, costs one
forward pass and gives a probability instead of a bare verdict.

LLM judges prefer one position (usually the first) regardless of content (Zheng et al. 2023,
section 3.3, "position bias"). The standard mitigation (section 3.4, "swapping positions") is to judge
twice with the two responses swapped; MT-Bench keeps a verdict only when both orders agree. We average the two
probabilities instead, the soft version of the same idea:

    prob_a = (P(A wins | a shown as A) + P(a wins | a shown as B)) / 2

so a judge that always says "A" lands on 0.5 (a tie) and swapping the responses gives exactly
1 - prob_a. It is pure computation: no database, no UI.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from alignment.chat import Messages, render_prompt, validate_messages

# After MT-Bench's pairwise judge prompt ("pair-v2"), asking for one letter instead of an explanation.
JUDGE_TEMPLATE = """Please act as an impartial judge and evaluate the quality of the responses provided \
by two AI assistants to the conversation displayed below. Choose the assistant that follows the user's \
instructions and answers the user's last message better, considering helpfulness, relevance, accuracy, \
depth and level of detail. Do not let the order in which the responses are presented or their length \
influence your decision. Be as objective as possible.

[The Start of the Conversation]
{conversation}
[The End of the Conversation]

[The Start of Assistant A's Answer]
{response_a}
[The End of Assistant A's Answer]

[The Start of Assistant B's Answer]
{response_b}
[The End of Assistant B's Answer]

Which answer is better? Reply with a single letter: "A" if assistant A's answer is better, \
"B" if assistant B's answer is better."""

LETTERS = ("A", "B")
DEFAULT_TIE_MARGIN = 0.05  # |prob_a - 0.5| below this is a tie
DEFAULT_MAX_CHARS = 6000  # per response and for the conversation, before the prompt is built
_ROLE_LABELS = {"system": "System", "user": "User", "assistant": "Assistant"}


@dataclass(frozen=True)
class Verdict:
    """The judge's verdict on (response_a, response_b), in the order they were given."""

    choice: str  # "a" | "b" | "tie"
    prob_a: float  # P(response_a is better), averaged over both presentation orders
    raw: str  # what the judge answered in each order, with the probabilities read
    prompt: str  # the judging prompt in the given order (response_a shown as A)
    prob_a_first: float  # P(a better) with a shown as A
    prob_a_swapped: float  # P(a better) with a shown as B (read as 1 - P(A wins) of that order)


def render_conversation(messages: Messages) -> str:
    """The conversation as a plain transcript ("User: ..."), for inside the judging prompt."""
    return "\n\n".join(f"{_ROLE_LABELS[m['role']]}: {m['content']}" for m in messages)


def _clip(text: str, max_chars: int) -> str:
    # Keep the start: a response's opening usually decides a comparison, and the prompt must fit.
    return text if len(text) <= max_chars else text[:max_chars] + " [...truncated]"


def judging_prompt(messages: Messages, response_a: str, response_b: str,
                   max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """The judge's user message for one presentation order (see :data:`JUDGE_TEMPLATE`)."""
    return JUDGE_TEMPLATE.format(conversation=_clip(render_conversation(messages), max_chars),
                                 response_a=_clip(response_a, max_chars), response_b=_clip(response_b, max_chars))


def letter_token_ids(tokenizer: Any, prompt: str) -> dict[str, list[int]]:
    """The token ids that spell each letter as the judge's first answer token.

    Taken from how the tokenizer encodes the letter right after ``prompt`` (the assistant tag), with
    and without a leading space, plus the letter encoded alone; only ids that decode to exactly the
    letter are kept, so a merged token like "AB" never counts as "A".
    """
    base = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids: dict[str, list[int]] = {}
    for letter in LETTERS:
        found: set[int] = set()
        for variant in (letter, " " + letter):
            after = tokenizer(prompt + variant, add_special_tokens=False)["input_ids"]
            if after[:len(base)] == base and len(after) > len(base):
                found.add(after[len(base)])
            alone = tokenizer(variant, add_special_tokens=False)["input_ids"]
            if alone:
                found.add(alone[0])
        ids[letter] = sorted(i for i in found if tokenizer.decode([i]).strip() == letter)
        if not ids[letter]:
            raise ValueError(f"the judge's tokenizer has no token for the letter {letter!r}")
    if set(ids["A"]) & set(ids["B"]):
        raise ValueError("the judge's tokenizer spells 'A' and 'B' with a shared token: cannot tell them apart")
    return ids


def _context_length(model: Any) -> int | None:
    return getattr(getattr(model, "config", None), "max_position_embeddings", None)


@torch.no_grad()
def _prob_first_wins(model: Any, tokenizer: Any, judge_messages: Messages) -> tuple[float, float, str]:
    """P("A") / (P("A") + P("B")) for the judge's next token, the letters' total mass, and the likelier letter."""
    prompt = render_prompt(tokenizer, judge_messages)
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    limit = _context_length(model)
    if limit is not None and len(ids) > limit:
        raise ValueError(f"the judging prompt is {len(ids)} tokens, longer than the judge's {limit}-token "
                         "context: use a judge with a longer context or shorter responses")
    letters = letter_token_ids(tokenizer, prompt)
    device = next(model.parameters()).device
    logits = model(input_ids=torch.tensor([ids], device=device), use_cache=False).logits[0, -1].float()
    probs = torch.softmax(logits, dim=-1)
    p_a, p_b = (float(probs[letters[letter]].sum()) for letter in LETTERS)
    mass = p_a + p_b
    if mass <= 0.0:  # both letters underflowed: no preference either way
        return 0.5, 0.0, "?"
    return p_a / mass, mass, "A" if p_a >= p_b else "B"


def _check_inputs(messages: Messages, response_a: Any, response_b: Any, tie_margin: float) -> None:
    validate_messages(messages)
    for name, value in (("response_a", response_a), ("response_b", response_b)):
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a str, got {type(value).__name__}")
    if not 0.0 <= tie_margin < 0.5:
        raise ValueError(f"tie_margin must be in [0, 0.5), got {tie_margin!r}")


def judge_pair(model: Any, tokenizer: Any, messages: Messages, response_a: str, response_b: str, *,
               tie_margin: float = DEFAULT_TIE_MARGIN, max_chars: int = DEFAULT_MAX_CHARS) -> Verdict:
    """Which of two responses to ``messages`` the judge prefers, averaged over both orders.

    Deterministic: two forward passes (a shown as A, then b shown as A), no sampling. ``choice``
    is "tie" when |prob_a - 0.5| < ``tie_margin``.
    """
    _check_inputs(messages, response_a, response_b, tie_margin)
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        prompt = judging_prompt(messages, response_a, response_b, max_chars)
        swapped = judging_prompt(messages, response_b, response_a, max_chars)
        first, mass_first, said_first = _prob_first_wins(model, tokenizer, [{"role": "user", "content": prompt}])
        second, mass_second, said_second = _prob_first_wins(model, tokenizer, [{"role": "user", "content": swapped}])
    finally:
        model.train(was_training)
    prob_a_swapped = 1.0 - second  # in the swapped order, "A" is response_b
    prob_a = (first + prob_a_swapped) / 2.0
    if abs(prob_a - 0.5) < tie_margin:
        choice = "tie"
    else:
        choice = "a" if prob_a > 0.5 else "b"
    raw = (f"a shown as A: said {said_first} (P(A)={first:.3f}, letter mass {mass_first:.3f}); "
           f"a shown as B: said {said_second} (P(A)={second:.3f}, letter mass {mass_second:.3f})")
    return Verdict(choice=choice, prob_a=prob_a, raw=raw, prompt=prompt, prob_a_first=first,
                   prob_a_swapped=prob_a_swapped)
