"""alignment.compare and its parts (comparison_model, row_masked_lora, shared_noise, kl): one base with
several LoRA adapters answering the same prompt side by side (batched in one mixed-adapter generate call,
or one after the other), the per-token KL estimate to the base, reward scores, and the check that every
adapter was trained on the compared base.

Runs on the CPU with the 2-layer random Llama (real SmolLM2 tokenizer) from tests/conftest.py.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from alignment.adapters import BASE, policy_weights
from alignment.compare import ModelRef, SideBySideBackend, answer_side_by_side
from alignment.comparison_model import clear_comparison_cache, get_comparison_model, load_comparison_model
from alignment.kl import k3_per_token, per_token_kl
from alignment.row_masked_lora import row_maskable, row_masked_adapters, scaling_as_tensor_is_exact
from alignment.shared_noise import SharedNoiseSampling
from alignment.sampling import SamplingParams
from alignment.training import DPOConfig, load_reward_model, score, train_dpo
from tests.conftest import build_tiny_model

PROMPT = [{"role": "user", "content": "Name a colour."}]
SAMPLED = SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=8)
GREEDY = SamplingParams(temperature=0, max_new_tokens=8)


def save_adapter(base_dir: Path, out: Path, zero_b: bool, seed: int = 0, **lora) -> Path:
    """A LoRA adapter on ``base_dir``: B = 0 (PEFT's default init, output unchanged) or random (output changed);
    ``lora``: further LoraConfig fields."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(base_dir)),
                           LoraConfig(**{"r": 4, "lora_alpha": 32, "target_modules": ["q_proj", "v_proj", "o_proj"],
                                         "task_type": TaskType.CAUSAL_LM, "init_lora_weights": zero_b, **lora}))
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module", autouse=True)
def fresh_cache():
    clear_comparison_cache()
    yield
    clear_comparison_cache()


@pytest.fixture(scope="module")
def zero_adapter(tiny_model_dir, tmp_path_factory) -> Path:
    return save_adapter(tiny_model_dir, tmp_path_factory.mktemp("zero") / "zero", zero_b=True)


@pytest.fixture(scope="module")
def random_adapter(tiny_model_dir, tmp_path_factory) -> Path:
    return save_adapter(tiny_model_dir, tmp_path_factory.mktemp("random") / "random", zero_b=False)


@pytest.fixture(scope="module")
def dpo_adapter(tiny_model_dir, tmp_path_factory) -> Path:
    """A DPO adapter after one real training step (lr 1e-2 so that one step visibly moves the policy)."""
    tmp = tmp_path_factory.mktemp("dpo")
    rows = [{"prompt": f"Question {i}: is it true?", "chosen": "Sure, yes", "rejected": "No, never"} for i in range(2)]
    (tmp / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    config = DPOConfig(model=str(tiny_model_dir), data=str(tmp / "pairs.jsonl"), out=str(tmp / "run"), max_steps=1,
                       batch_size=2, lr=1e-2, eval_fraction=0.0, max_length=64, lora_r=4, lora_alpha=8,
                       lora_dropout=0.0)
    return train_dpo(config).out_dir


# --------------------------------------------------------------------------------------------
# per_token_kl
# --------------------------------------------------------------------------------------------

def test_k3_is_nonnegative_and_zero_only_where_the_models_agree():
    policy = torch.log(torch.tensor([0.5, 0.2, 0.9]))
    base = torch.log(torch.tensor([0.5, 0.4, 0.3]))
    k3 = k3_per_token(policy, base)
    r = torch.tensor([1.0, 2.0, 1 / 3], dtype=torch.float64)
    assert torch.allclose(k3, (r - 1) - r.log())  # k3 = (r - 1) - log r, r = π_base / π
    assert k3[0] == 0 and (k3[1:] > 0).all()


def test_kl_is_zero_for_the_base_and_for_a_zero_initialised_adapter(tiny_model_dir, zero_adapter):
    refs = [ModelRef(str(tiny_model_dir), label="base"), ModelRef(str(tiny_model_dir), str(zero_adapter))]
    base, zero = answer_side_by_side(refs, PROMPT, SAMPLED, seed=3)
    # B = 0 leaves the outputs unchanged, and both rows draw the same random numbers: the same answer.
    assert zero.text == base.text and zero.num_tokens == base.num_tokens > 0
    assert base.kl_to_base == 0.0 and abs(zero.kl_to_base) < 1e-6

    model = get_comparison_model(str(tiny_model_dir), [zero_adapter]).loaded.model
    assert per_token_kl(model, [1, 2, 3], [4, 5, 6], BASE) == 0.0  # the base against itself, computed


def test_kl_is_positive_after_one_dpo_step_and_matches_the_equation(tiny_model_dir, dpo_adapter):
    refs = [ModelRef(str(tiny_model_dir)), ModelRef(str(tiny_model_dir), str(dpo_adapter), label="dpo")]
    _, tuned = answer_side_by_side(refs, PROMPT, SAMPLED, seed=0)
    assert tuned.label == "dpo" and tuned.kl_to_base > 1e-6

    # The same estimate from full-vocabulary log-softmaxes, straight from the equation.
    compared = get_comparison_model(str(tiny_model_dir), [dpo_adapter])
    model, name = compared.loaded.model, compared.adapter_name(dpo_adapter)
    prompt, completion = [1, 2, 3, 4], [5, 6, 7]
    ids = torch.tensor([prompt + completion])
    targets = ids[0, len(prompt):]

    def token_logps() -> torch.Tensor:
        logps = torch.log_softmax(model(input_ids=ids).logits[0, len(prompt) - 1:-1].double(), -1)
        return logps.gather(-1, targets[:, None]).squeeze(-1)

    with torch.no_grad():
        model.set_adapter(name)
        policy = token_logps()
        with model.disable_adapter():
            base = token_logps()
    log_r = base - policy
    expected = ((log_r.exp() - 1) - log_r).mean().item()
    # float32 log-probs (about 1e-6 absolute) against float64 ones: k3 ~ (log r)^2 / 2 agrees to ~1e-3.
    assert per_token_kl(model, prompt, completion, name) == pytest.approx(expected, rel=1e-3)


# --------------------------------------------------------------------------------------------
# Batched vs one after the other
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("params", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_batched_answers_equal_one_after_the_other(tiny_model_dir, random_adapter, zero_adapter, params):
    refs = [ModelRef(str(tiny_model_dir)), ModelRef(str(tiny_model_dir), str(random_adapter)),
            ModelRef(str(tiny_model_dir), str(zero_adapter))]
    batched = answer_side_by_side(refs, PROMPT, params, seed=11, batched=True)
    alone = answer_side_by_side(refs, PROMPT, params, seed=11, batched=False)
    # Greedy and sampled alike: each row has its own random stream seeded alike, so a model's answer in
    # the batch is the one it gives alone.
    assert [a.text for a in batched] == [a.text for a in alone]
    assert [a.kl_to_base for a in batched] == pytest.approx([a.kl_to_base for a in alone], abs=1e-6)
    assert batched[1].text != batched[0].text  # the random adapter was really applied to its row
    assert batched[1].kl_to_base > 0
    assert len({a.seconds for a in batched}) == 1 and all(a.seed == 11 for a in batched)
    assert all(a.finish_reason in {"stop", "length"} and a.num_tokens <= params.max_new_tokens for a in batched)


def lora_state(model) -> tuple:
    """The active adapters and every LoRA layer's scalings (what a batch swaps and must put back)."""
    from peft.tuners.lora import LoraLayer

    scalings = [(name, m.scaling[name]) for m in model.modules() if isinstance(m, LoraLayer) for name in m.scaling]
    assert all(isinstance(scaling, float) for _, scaling in scalings)
    return list(model.active_adapters), scalings


def test_a_row_masked_batch_gives_every_row_its_own_models_outputs(tiny_model_dir, random_adapter, tmp_path):
    """One forward pass over rows (base, adapter 1, adapter 2, adapter 1) equals each model's own forward pass,
    an adapter with LoRA dropout (the identity in eval mode), another rank and scaling and a LoRA bias included; the
    model is left as it was."""
    dropout_adapter = save_adapter(tiny_model_dir, tmp_path / "dropout", zero_b=False, seed=1, lora_dropout=0.1, r=8,
                                   lora_alpha=12, target_modules=["q_proj", "k_proj", "gate_proj", "down_proj"],
                                   lora_bias=True)
    compared = get_comparison_model(str(tiny_model_dir), [random_adapter, dropout_adapter])
    model = compared.loaded.model
    first, second = compared.adapter_name(random_adapter), compared.adapter_name(dropout_adapter)
    names = [BASE, first, second, first]
    input_ids = torch.tensor([[1, 5, 9, 14, 20, 3]] * len(names))
    before = lora_state(model)

    with torch.no_grad():
        with row_masked_adapters(model, names):
            batched = model(input_ids=input_ids).logits
        assert lora_state(model) == before
        for row, name in enumerate(names):
            with policy_weights(model, name):
                alone = model(input_ids=input_ids[:1]).logits[0]
            assert torch.allclose(batched[row], alone, atol=1e-5), (row, name)
    # Each adapter really changed its rows, and only its rows.
    assert not torch.allclose(batched[1], batched[0], atol=1e-3)
    assert not torch.allclose(batched[2], batched[1], atol=1e-3)
    assert torch.equal(batched[3], batched[1])

    with pytest.raises(RuntimeError, match="interrupted"), row_masked_adapters(model, names):
        raise RuntimeError("interrupted")
    assert lora_state(model) == before


def test_a_scaling_tensor_multiplies_like_the_scalar_exactly_when_the_dtype_holds_the_scaling():
    x = torch.randn(3, 5, 16)
    for dtype, scaling in [(torch.float32, 1 / 3), (torch.bfloat16, 2.0), (torch.float16, 1.5),
                           (torch.bfloat16, 1 / 3), (torch.float16, 32 / 12 ** 0.5)]:
        t = x.to(dtype)
        same = torch.equal(t * scaling, t * torch.tensor(scaling, dtype=dtype))
        assert scaling_as_tensor_is_exact(scaling, dtype) == same, (dtype, scaling)
    assert not scaling_as_tensor_is_exact(1 / 3, torch.bfloat16)  # such an adapter is batched the PEFT way


def test_an_adapter_whose_scaling_the_weights_cannot_hold_goes_through_peft_mixed_batches(tiny_model_dir, tmp_path):
    """In bfloat16, alpha / r = 32 / 12 is not representable: a scaling tensor would round it, so such an adapter is
    batched the PEFT way (``adapter_names=``), and every row still gives the answer its model gives alone."""
    adapter = save_adapter(tiny_model_dir, tmp_path / "r12", zero_b=False, seed=2, r=12)
    compared = load_comparison_model(str(tiny_model_dir), [adapter], device="cpu")  # a private copy, not the cache's
    compared.loaded.model.to(torch.bfloat16)
    name = compared.adapter_name(adapter)
    assert not row_maskable(compared.loaded.model, [BASE, name])
    backend = SideBySideBackend(compared.loaded)
    prompt_ids = backend.prompt_ids(PROMPT, GREEDY)
    batched = backend.generate_batched(prompt_ids, [BASE, name], GREEDY, seed=0)
    alone = [backend.generate_alone(prompt_ids, n, GREEDY, seed=0) for n in (BASE, name)]
    assert [g.token_ids for g in batched] == [g.token_ids for g in alone]
    assert batched[1].token_ids != batched[0].token_ids


def test_the_seed_drives_sampling(tiny_model_dir):
    refs = [ModelRef(str(tiny_model_dir)), ModelRef(str(tiny_model_dir), label="again")]
    params = SamplingParams(temperature=1.5, top_p=1.0, max_new_tokens=12)
    first = [a.text for a in answer_side_by_side(refs, PROMPT, params, seed=1)]
    assert first[0] == first[1]  # same model, same seed: same answer, in one batch
    assert first == [a.text for a in answer_side_by_side(refs, PROMPT, params, seed=1)]
    others = {answer_side_by_side(refs[:1], PROMPT, params, seed=s)[0].text for s in range(2, 6)}
    assert others - {first[0]}  # other seeds give other answers


def test_shared_noise_sampling_draws_from_the_softmax():
    """Gumbel-max with the per-row streams samples the categorical distribution softmax(scores)."""
    probs = torch.tensor([0.5, 0.25, 0.15, 0.1])
    scores = probs.log()[None]
    sampler = SharedNoiseSampling(seed=0, device="cpu")
    n = 6000
    counts = torch.bincount(torch.stack([sampler(None, scores).argmax(-1)[0] for _ in range(n)]), minlength=4)
    # Each frequency within 4 standard errors of its probability.
    assert ((counts / n - probs).abs() <= 4 * (probs * (1 - probs) / n).sqrt()).all()


# --------------------------------------------------------------------------------------------
# Reward scores, labels and refusals
# --------------------------------------------------------------------------------------------

def test_reward_scores_are_given_for_every_answer(tiny_model_dir, random_adapter, tiny_reward_dir):
    refs = [ModelRef(str(tiny_model_dir)), ModelRef(str(tiny_model_dir), str(random_adapter))]
    rm = load_reward_model(tiny_reward_dir)
    answers = answer_side_by_side(refs, PROMPT, GREEDY, seed=0, reward=rm)
    expected = score(rm.model, rm.tokenizer, [PROMPT, PROMPT], [a.text for a in answers])
    assert [a.rm_score for a in answers] == pytest.approx(expected)
    assert all(math.isfinite(a.rm_score) for a in answers)
    assert [a.label for a in answers] == [str(tiny_model_dir), "random"]
    assert all(a.rm_score is None for a in answer_side_by_side(refs, PROMPT, GREEDY, seed=0))


def test_an_adapter_trained_on_another_base_is_refused(tiny_model_dir, tokenizer_dir, tmp_path):
    other_base = build_tiny_model(tokenizer_dir, tmp_path / "other-base", seed=1)
    foreign = save_adapter(other_base, tmp_path / "foreign", zero_b=False)
    refs = [ModelRef(str(tiny_model_dir)), ModelRef(str(tiny_model_dir), str(foreign))]
    with pytest.raises(ValueError, match=r"adapter .*foreign was trained on base model .*other-base.*, not on "
                                         r".*share one base model"):
        answer_side_by_side(refs, PROMPT, GREEDY, seed=0)


def test_models_on_different_bases_are_refused(tiny_model_dir, tokenizer_dir, tmp_path):
    other_base = build_tiny_model(tokenizer_dir, tmp_path / "other-base", seed=1)
    with pytest.raises(ValueError, match="share one base model"):
        answer_side_by_side([ModelRef(str(tiny_model_dir)), ModelRef(str(other_base))], PROMPT, GREEDY, seed=0)
    with pytest.raises(ValueError, match="pick at least one model"):
        answer_side_by_side([], PROMPT, GREEDY, seed=0)


def test_an_adapter_that_does_not_fit_is_refused_and_leaves_the_base_clean(tiny_model_dir, tmp_path):
    """An adapter recording no base passes the check, then fails to load (other shapes): clear error, and the
    next comparison starts from a clean copy of the base, not one with half-injected layers."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    narrow = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=2))
    get_peft_model(narrow, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type=TaskType.CAUSAL_LM,
                                      init_lora_weights=False)).save_pretrained(tmp_path / "misfit")
    config_file = tmp_path / "misfit" / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = None
    config_file.write_text(json.dumps(config))

    base = ModelRef(str(tiny_model_dir))
    before = answer_side_by_side([base], PROMPT, GREEDY, seed=0)[0].text
    with pytest.raises(ValueError, match=r"adapter .*misfit does not fit base model"):
        answer_side_by_side([base, ModelRef(str(tiny_model_dir), str(tmp_path / "misfit"))], PROMPT, GREEDY, seed=0)
    assert answer_side_by_side([base], PROMPT, GREEDY, seed=0)[0].text == before
