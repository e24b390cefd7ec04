"""The policy-gradient variants wired into the online loop: GSPO's clip defaults, DAPO's dynamic sampling
(drop and refill), concatenating refill rounds, and per-term logging of the reward library."""

from __future__ import annotations

import json

import pytest
import torch

from tether.algorithms.online_batch import LoopHooks, forward, refilled
from tether.algorithms.policy_gradient import clip_range, pg_loss, run_policy_gradient
from tether.config import ConfigError, PGConfig
from tether.models import save_model
from tether.models.value import PolicyValue
from tether.rollout.experience import Experience, concat, sample


def test_clip_ranges_default_to_each_losss_paper():
    assert clip_range(PGConfig()) == (0.2, 0.2)
    assert clip_range(PGConfig(clip_eps_high=0.28)) == (0.2, 0.28)  # DAPO
    assert clip_range(PGConfig(policy_loss="gspo")) == (3e-4, 4e-4)  # GSPO
    assert clip_range(PGConfig(policy_loss="gspo", clip_eps=1e-3)) == (1e-3, 1e-3)
    assert clip_range(PGConfig(policy_loss="seq_clip")) == (0.2, 0.2)  # a product of token ratios: PPO's


def test_gspo_through_pg_loss_hand_worked():
    # One group of two responses (lengths 2 and 1), advantages +1 / −1, log-ratios (0.001, 0.003) and
    # (0.0002): s₁ = exp(0.002) = 1.002002, above 1 + ε_high = 1.0004, so for Â > 0 the clip is active;
    # s₂ = exp(0.0002) = 1.0002 is inside [0.9997, 1.0004], so response 2 keeps its gradient.
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    old = torch.zeros(2, 2)
    new = torch.tensor([[0.001, 0.003], [0.0002, 0.0]], requires_grad=True)
    experience = Experience(
        prompts=["a", "a"],
        completions=["", ""],
        sequences=torch.zeros(2, 3, dtype=torch.long),
        attention_mask=torch.ones(2, 3),
        response_mask=mask,
        finished=torch.ones(2, dtype=torch.bool),
        old_logprobs=old,
        advantages=torch.tensor([[1.0, 1.0], [-1.0, 0.0]]),
    )
    config = PGConfig(policy_loss="gspo", kl_coef=0.0, loss_agg="seq_mean_token_mean")
    loss, metrics = pg_loss({"logprobs": new, "entropy": torch.zeros(2, 2)}, experience, config, 0.0)
    # ℓ₁ = −min(1.002002, 1.0004) = −1.0004; ℓ₂ = −min(−1.0002, −1.0002) = 1.0002.
    assert float(loss.detach()) == pytest.approx((-1.0004 + 1.00020002) / 2, abs=1e-7)
    assert float(metrics["policy/clipfrac"]) == pytest.approx(0.5)
    loss.backward()
    # Only the unclipped response has a gradient: −Â·s/|y| = 1.0002 on its one token (÷2 for the mean).
    torch.testing.assert_close(new.grad, torch.tensor([[0.0, 0.0], [1.00020002 / 2, 0.0]]), atol=1e-6, rtol=0)


def test_concat_repads_prompts_and_responses(make_model, tokenizer):
    torch.manual_seed(0)
    model = make_model()
    a = sample(model, tokenizer, ["review the lid."], group_size=2, max_new_tokens=3)
    b = sample(
        model, tokenizer, ["write a long review of the kettle please."], group_size=2, max_new_tokens=6
    )
    both = concat([a, b], tokenizer.pad_token_id)
    assert both.sequences.shape == (
        4,
        b.prompt_length + max(a.response_mask.shape[1], b.response_mask.shape[1]),
    )
    module = PolicyValue(model, "none").eval()
    with torch.no_grad():
        joint = forward(module, both, 1.0)["logprobs"]
        for rows, part in ((slice(0, 2), a), (slice(2, 4), b)):
            alone = forward(module, part, 1.0)["logprobs"]
            width = part.response_mask.shape[1]
            torch.testing.assert_close(joint[rows, :width] * part.response_mask, alone * part.response_mask)
            assert both.response_mask[rows, width:].sum() == 0
    assert both.completions == a.completions + b.completions


def groups_with_scores(scores: list[list[float]]) -> Experience:
    n, group = len(scores) * len(scores[0]), len(scores[0])
    return Experience(
        prompts=[f"p{i // group}" for i in range(n)],
        completions=[""] * n,
        sequences=torch.zeros(n, 2, dtype=torch.long),
        attention_mask=torch.ones(n, 2),
        response_mask=torch.ones(n, 1),
        finished=torch.ones(n, dtype=torch.bool),
        old_logprobs=torch.zeros(n, 1),
        scores=torch.tensor(scores).flatten(),
    )


def test_dynamic_sampling_drops_equal_groups_and_refills():
    from tether.losses.variants import dynamic_sampling_mask

    rounds = {
        0: [[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]],  # one informative group of three
        1: [[1.0, 0.0], [1.0, 1.0], [0.5, 0.5]],  # one more
        2: [[0.0, 1.0], [0.2, 0.1], [1.0, 1.0]],  # two more: one too many, dropped
    }
    asked = []

    def experience_of(r):
        asked.append(r)
        return groups_with_scores(rounds[r])

    config = PGConfig(group_size=2, batch_size=3)
    hooks = LoopHooks(keep=lambda e: dynamic_sampling_mask(e.scores, 2), max_resamples=5)
    experience, metrics = refilled(experience_of(0), experience_of, hooks, config, 0)
    assert asked == [0, 1, 2]
    assert experience.scores.tolist() == [0.0, 1.0, 1.0, 0.0, 0.0, 1.0]
    assert metrics == {"dynamic/kept_groups": 3.0, "dynamic/resample_rounds": 2.0}
    # A limit of one extra round: the batch stays short.
    asked.clear()
    hooks.max_resamples = 1
    experience, metrics = refilled(experience_of(0), experience_of, hooks, config, 0)
    assert asked == [0, 1] and len(experience.scores) == 4 and metrics["dynamic/kept_groups"] == 2.0


def test_grpo_with_the_reward_library_logs_each_term(make_model, tokenizer, tmp_path):
    save_model(make_model(), tokenizer, tmp_path / "tiny")
    out = tmp_path / "grpo"
    run_policy_gradient(
        PGConfig(
            model=str(tmp_path / "tiny"),
            output_dir=str(out),
            prompts="gym:arithmetic",
            reward="verifiable:exact_match[answers=gym:arithmetic],overlong[max_length=8,cache=4]:0.5",
            max_steps=2,
            batch_size=2,
            group_size=2,
            max_new_tokens=8,
            dynamic_sampling=True,
            max_resamples=1,
            policy_loss="gspo",
            progress=False,
            tensorboard=False,
        )
    )
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        assert {"reward/exact_match", "reward/overlong", "dynamic/kept_groups"} <= set(row)
        assert row["reward/overlong"] <= 0.0 and 0.0 <= row["reward/exact_match"] <= 1.0
        # The total is the weighted sum of the terms (the penalty for unfinished responses aside).
        assert row["loss"] == row["loss"]


def test_truncated_importance_weights_scale_each_tokens_loss():
    # Ratio 1 to π_old; the engine's log-probs differ: ρ = exp(log π_old − log π_rollout) = e^{0.5} = 1.6487
    # (kept), e^{1.5} = 4.4817 (capped at 2), e^{−1} = 0.3679; the gradient of token t is −Â·w_t.
    old = torch.tensor([[-1.0, -2.0, -0.5]])
    logprobs = old.clone().requires_grad_()
    experience = Experience(
        prompts=["a"],
        completions=[""],
        sequences=torch.zeros(1, 4, dtype=torch.long),
        attention_mask=torch.ones(1, 4),
        response_mask=torch.ones(1, 3),
        finished=torch.ones(1, dtype=torch.bool),
        old_logprobs=old,
        rollout_logprobs=torch.tensor([[-1.5, -3.5, 0.5]]),
        advantages=torch.full((1, 3), 2.0),
    )
    config = PGConfig(kl_coef=0.0, tis_cap=2.0, loss_agg="seq_mean_token_sum")
    loss, metrics = pg_loss({"logprobs": logprobs, "entropy": torch.zeros(1, 3)}, experience, config, 0.0)
    weights = torch.tensor([[1.648721, 2.0, 0.367879]])
    assert float(loss.detach()) == pytest.approx(-2.0 * float(weights.sum()), rel=1e-5)
    loss.backward()
    torch.testing.assert_close(logprobs.grad, -2.0 * weights, rtol=1e-5, atol=0)
    assert float(metrics["mismatch/capped_frac"]) == pytest.approx(1 / 3)
    with pytest.raises(ConfigError, match="needs rollout_backend=vllm"):
        run_policy_gradient(PGConfig(tis_cap=2.0))
