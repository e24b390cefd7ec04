"""The online loop's pieces: advantages from shaped rewards, the unfinished penalty, and short real runs of
PPO (head and separate critic, LoRA) and GRPO that log the same metric keys."""

import json
import math

import pytest
import torch

from tether import TetherError
from tether.algorithms.distribution_matching import run_distribution_matching
from tether.algorithms.nash_md import pair_preferences, run_nash_md
from tether.algorithms.online import shuffled_minibatches
from tether.algorithms.online_batch import make_experience
from tether.algorithms.online_dpo import label_pairs, run_online_dpo
from tether.algorithms.policy_gradient import pg_advantages, run_policy_gradient
from tether.algorithms.ppo import run_ppo
from tether.config import (
    DistributionMatchingConfig,
    NashMDConfig,
    OnlineDPOConfig,
    PGConfig,
    PPOConfig,
    load_config,
)
from tether.judges import FunctionJudge
from tether.models import save_model
from tether.models.value import PolicyValue
from tether.rollout.experience import Experience


def test_rloo_sees_score_minus_kl_of_each_response():
    # Two prompts × G = 2. Shaped rewards already hold −β·KL per token and the score at the last token.
    rewards = torch.tensor([[0.0, 1.0], [-0.5, 0.0], [2.0, 0.0], [0.5, 0.5]])
    mask = torch.tensor([[1, 1], [1, 0], [1, 0], [1, 1]])
    experience = Experience(
        prompts=["a", "a", "b", "b"],
        completions=[""] * 4,
        sequences=torch.zeros(4, 3, dtype=torch.long),
        attention_mask=torch.ones(4, 3),
        response_mask=mask,
        finished=torch.ones(4, dtype=torch.bool),
        old_logprobs=torch.zeros(4, 2),
        rewards=rewards,
    )
    config = PGConfig(estimator="rloo", group_size=2, whiten_advantages=False)
    pg_advantages(experience, config, {"baseline": 0.0})
    # Whole-response rewards 1, −0.5 | 2, 1 → leave-one-out: 1.5, −1.5 | 1, −1, on every real token.
    expected = torch.tensor([[1.5, 1.5], [-1.5, 0.0], [1.0, 0.0], [-1.0, -1.0]])
    torch.testing.assert_close(experience.advantages, expected)


def test_dr_grpo_and_rloo_advantages_are_their_papers_by_default():
    # One group of G = 4 with scores [1, 0, 0, 0] and response lengths 8/2/8/4. Dr. GRPO: r − mean =
    # [0.75, −0.25, −0.25, −0.25] on every token (the old batch whitening gave [1.292, −0.739, …], a group
    # that no longer sums to zero). RLOO: r − mean of the others = [1, −1/3, −1/3, −1/3].
    lengths = torch.tensor([8, 2, 8, 4])
    mask = (torch.arange(8)[None, :] < lengths[:, None]).long()
    rewards = torch.zeros(4, 8)
    rewards[0, 7] = 1.0
    for estimator, expected in (
        ("dr_grpo", [0.75, -0.25, -0.25, -0.25]),
        ("rloo", [1.0, -1 / 3, -1 / 3, -1 / 3]),
    ):
        experience = Experience(
            prompts=["a"] * 4,
            completions=[""] * 4,
            sequences=torch.zeros(4, 9, dtype=torch.long),
            attention_mask=torch.ones(4, 9),
            response_mask=mask,
            finished=torch.ones(4, dtype=torch.bool),
            old_logprobs=torch.zeros(4, 8),
            rewards=rewards,
        )
        pg_advantages(experience, PGConfig(estimator=estimator, group_size=4), {"baseline": 0.0})
        torch.testing.assert_close(experience.advantages, torch.tensor(expected)[:, None] * mask)


@pytest.mark.parametrize("score", [5.0, -3.0])
def test_unfinished_responses_lose_the_penalty(make_model, tokenizer, score):
    # The penalty is subtracted, so truncation never pays: a scorer below −1 used to be lifted to −1.
    torch.manual_seed(0)
    module = PolicyValue(make_model(), "none")
    judge = FunctionJudge(lambda prompts, completions: [score] * len(prompts))
    config = PGConfig(max_new_tokens=2, group_size=2, unfinished_penalty=1.0, kl_coef=0.0, ppo_epochs=2)
    experience = make_experience(
        module, module.policy, tokenizer, judge, ["review the lid."] * 3, config, 0.0
    )
    expected = torch.where(experience.finished, torch.tensor(score), torch.tensor(score - 1.0))
    torch.testing.assert_close(experience.scores, expected)
    torch.testing.assert_close(experience.raw_scores, torch.full((6,), score))
    assert not experience.finished.all()  # an untrained model rarely stops within 2 tokens
    torch.testing.assert_close(experience.ref_logprobs, experience.old_logprobs)  # π_ref = π at the start
    # One on-policy update over the whole batch: no separate forward for log π_old (it is the update's own).
    single_config = PGConfig(max_new_tokens=2, group_size=2, ppo_epochs=1, minibatch_size=6)
    single = make_experience(
        module, module.policy, tokenizer, judge, ["review the lid."] * 3, single_config, 0.0
    )
    assert single.old_logprobs is None and single.ref_logprobs is not None


def test_a_scorer_returning_nan_is_a_one_line_error_naming_it(make_model, tokenizer):
    # Not only Python reward functions: a reward model or LLM judge's output is checked in the loop too.
    class NanModel:
        def score(self, prompts, completions):
            return [float("nan")] * len(prompts)

    module = PolicyValue(make_model(), "none")
    config = PGConfig(max_new_tokens=2, group_size=2, reward="runs/my_reward_model")
    with pytest.raises(
        TetherError, match=r"^reward function 'runs/my_reward_model': value 0 is nan \(prompt 'review"
    ):
        make_experience(module, module.policy, tokenizer, NanModel(), ["review the lid."], config, 0.0)


@pytest.fixture
def tiny_folder(make_model, tokenizer, tmp_path):
    save_model(make_model(), tokenizer, tmp_path / "tiny")
    return str(tmp_path / "tiny")


@pytest.mark.parametrize(
    ("command", "extra"),
    [
        ("ppo", ["critic=head"]),
        ("ppo", ["critic=model", "lora=true", "lora_r=4"]),
        ("grpo", ["group_size=2"]),
    ],
)
def test_short_runs_log_the_same_keys(tiny_folder, tmp_path, command, extra):
    out = tmp_path / command
    overrides = [
        f"model={tiny_folder}",
        "reward=gym:reviews",
        "gold=gym:reviews",
        f"output_dir={out}",
        "max_steps=2",
        "batch_size=4",
        "minibatch_size=4",
        "max_new_tokens=8",
        "progress=false",
        "tensorboard=false",
        "n_prompts=16",
        *extra,
    ]
    if command == "ppo":
        row = run_ppo(load_config(PPOConfig, None, overrides))
    else:
        row = run_policy_gradient(load_config(PGConfig, None, overrides))
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 2]
    for key in (
        "reward/score",
        "reward/gold",
        "kl/ref",
        "policy/clipfrac",
        "policy/entropy",
        "response/length",
    ):
        assert key in row and row[key] == row[key]  # present and not NaN
    if command == "ppo":
        assert "value/explained_variance" in row and "value/loss" in row
    assert (out / "config.json").exists() and not (out / "adapter_config.json").exists()


def test_minibatches_keep_groups_whole():
    torch.manual_seed(0)
    batches = shuffled_minibatches(12, group_size=3, minibatch_size=7)  # 7 rounds down to 2 groups of 3
    assert [len(b) for b in batches] == [6, 6]
    rows = torch.cat(batches)
    assert sorted(rows.tolist()) == list(range(12))
    for start in range(0, 12, 3):
        group = rows[start : start + 3]
        assert group.tolist() == list(range(int(group[0]), int(group[0]) + 3)) and int(group[0]) % 3 == 0


def test_minibatches_of_rows_shuffle_across_groups_with_the_same_sizes():
    torch.manual_seed(0)
    batches = shuffled_minibatches(12, group_size=3, minibatch_size=7, by_rows=True)
    assert [len(b) for b in batches] == [6, 6]  # as many rows per minibatch as whole groups would give
    assert sorted(torch.cat(batches).tolist()) == list(range(12))
    # some minibatch holds part of a group: the prompts of its rows are not whole groups of 3
    prompts = [sorted((b // 3).tolist()) for b in batches]
    assert any(any(p.count(g) != 3 for g in set(p)) for p in prompts)


def test_one_minibatch_keeps_the_rows_in_order_and_draws_no_random_numbers():
    state = torch.get_rng_state()
    assert [b.tolist() for b in shuffled_minibatches(12, group_size=3, minibatch_size=12)] == [
        list(range(12))
    ]
    assert torch.equal(torch.get_rng_state(), state)


def test_a_zero_entropy_coefficient_sends_no_gradient_through_the_entropy():
    from tether.algorithms.policy_gradient import pg_loss

    mask = torch.ones(2, 3)
    logprobs = torch.log(torch.full((2, 3), 0.5)).requires_grad_()
    entropy = torch.ones(2, 3, requires_grad=True)
    batch = Experience(
        prompts=["a", "a"],
        completions=["", ""],
        sequences=torch.zeros(2, 4, dtype=torch.long),
        attention_mask=torch.ones(2, 4, dtype=torch.long),
        response_mask=mask,
        finished=torch.ones(2, dtype=torch.bool),
        old_logprobs=logprobs.detach(),
        ref_logprobs=logprobs.detach(),
        advantages=torch.tensor([[1.0] * 3, [-1.0] * 3]),
    )
    for coef, touched in ((0.0, False), (0.1, True)):
        config = PGConfig(ent_coef=coef, kl_estimator="k3", kl_in_reward=False, loss_agg="token_mean")
        loss, metrics = pg_loss({"logprobs": logprobs, "entropy": entropy}, batch, config, 0.05)
        loss.backward()
        assert (entropy.grad is not None) == touched
        assert metrics["policy/entropy"] == 1.0  # reported either way
        # ρ = 1 and the KL term's gradient is 0 at π = π_ref: −mean(Â) over tokens gives ∂/∂logπ = −Â/6
        torch.testing.assert_close(logprobs.grad, -batch.advantages / 6)
        logprobs.grad = entropy.grad = None


def test_the_first_prompts_of_a_pool_do_not_depend_on_its_size(tmp_path):
    # run_online loads only the max_steps · batch_size prompts it can reach: exact because of this.
    from tether.specs import load_prompts

    assert load_prompts("gym:reviews", 5, seed=3) == load_prompts("gym:reviews", 40, seed=3)[:5]
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"p{i}"}) + "\n" for i in range(9)))
    assert load_prompts(str(path), 4, seed=3) == load_prompts(str(path), 9, seed=3)[:4]


def test_online_dpo_labels_pairs_and_skips_ties():
    experience = Experience(
        prompts=["a"] * 6,
        completions=[""] * 6,
        sequences=torch.zeros(6, 2, dtype=torch.long),
        attention_mask=torch.ones(6, 2),
        response_mask=torch.ones(6, 1),
        finished=torch.ones(6, dtype=torch.bool),
        old_logprobs=None,
        scores=torch.tensor([1.0, 0.0, 0.0, 2.0, 3.0, 3.0]),
    )
    label_pairs(experience, OnlineDPOConfig())
    assert experience.extras["first_wins"].tolist() == [True, True, False, False, False, False]
    assert experience.extras["decided"].tolist() == [True, True, True, True, False, False]


def test_short_online_dpo_run(tiny_folder, tmp_path):
    out = tmp_path / "online_dpo"
    row = run_online_dpo(
        load_config(
            OnlineDPOConfig,
            None,
            [
                f"model={tiny_folder}",
                "reward=gym:reviews",
                f"output_dir={out}",
                "max_steps=2",
                "batch_size=4",
                "max_new_tokens=8",
                "progress=false",
                "tensorboard=false",
                "n_prompts=16",
            ],
        )
    )
    assert 0 <= row["pairs/decided"] <= 1 and row["loss"] == row["loss"]
    assert (out / "config.json").exists()


def test_nash_pairs_play_each_other():
    def experience(scores, pairwise, finished=(True,) * 4):
        return Experience(
            prompts=["a"] * 4,
            completions=[""] * 4,
            sequences=torch.zeros(4, 2, dtype=torch.long),
            attention_mask=torch.ones(4, 2),
            response_mask=torch.ones(4, 1),
            finished=torch.tensor(finished),
            old_logprobs=None,
            raw_scores=torch.tensor(scores),
            scores=torch.tensor(scores),
            extras={"judge_pairwise": torch.full((4,), float(pairwise))},
        )

    scalar = experience([2.0, 0.0, 1.0, 1.0], pairwise=False)
    pair_preferences(scalar, NashMDConfig(preference_scale=2.0, opponent="self"))
    p = 1 / (1 + math.exp(-1.0))  # σ((2 − 0)/2)
    torch.testing.assert_close(scalar.extras["preference"], torch.tensor([p, 1 - p, 0.5, 0.5]))
    assert scalar.extras["player"].tolist() == [1, 1, 1, 1]  # self-play: both rows are players
    # A pairwise judge's round-robin score of a row in a pair is already P(row ≻ partner).
    judged = experience([0.8, 0.2, 0.3, 0.7], pairwise=True)
    pair_preferences(judged, NashMDConfig(opponent="mixture"))
    torch.testing.assert_close(judged.extras["preference"], torch.tensor([0.8, 0.2, 0.3, 0.7]))
    assert judged.extras["player"].tolist() == [1, 0, 1, 0]  # the mixture opponent is not trained on
    # An unfinished response loses to a finished one, whichever row it is (the penalty used to replace
    # the judge's probability: scores [−1, 0.3] read as P = [−1, 2], and [0.7, −1] kept 0.7).
    unfinished = experience([0.7, 0.3, 0.4, 0.6], pairwise=True, finished=(False, True, True, False))
    pair_preferences(unfinished, NashMDConfig(opponent="self"))
    torch.testing.assert_close(unfinished.extras["preference"], torch.tensor([0.0, 1.0, 1.0, 0.0]))
    both = experience([0.7, 0.3, 0.4, 0.6], pairwise=True, finished=(False, False, True, True))
    pair_preferences(both, NashMDConfig(opponent="self"))
    torch.testing.assert_close(both.extras["preference"], torch.tensor([0.7, 0.3, 0.4, 0.6]))


@pytest.mark.parametrize("method", ["dpg", "brain", "nash-md"])
def test_short_distribution_matching_and_nash_runs(tiny_folder, tmp_path, method):
    out = tmp_path / method
    overrides = [
        f"model={tiny_folder}",
        "reward=gym:reviews",
        f"output_dir={out}",
        "max_steps=2",
        "batch_size=2",
        "max_new_tokens=8",
        "progress=false",
        "tensorboard=false",
        "n_prompts=8",
    ]
    if method == "nash-md":  # the default opponent: the geometric mixture with the reference
        row = run_nash_md(load_config(NashMDConfig, None, overrides))
        assert 0 <= row["nash/preference"] <= 1
    else:
        config = load_config(DistributionMatchingConfig, None, [*overrides, f"method={method}"])
        row = run_distribution_matching(config)
        assert 1 <= row["distribution/ess"] <= config.group_size
    assert row["loss"] == row["loss"] and (out / "config.json").exists()


RESUMABLE = {
    "reinforce": (PGConfig, run_policy_gradient, ["estimator=reinforce_baseline", "whiten_advantages=false"]),
    "ppo": (PPOConfig, run_ppo, ["critic=head", "ppo_epochs=2"]),
    # multi-turn episodes with the calculator (the tiny model's turns rarely call it; masks still apply)
    "grpo-env": (
        PGConfig,
        run_policy_gradient,
        ["env=calculator", "prompts=gym:arithmetic", "max_turns=2", "group_size=2"],
    ),
    # the frozen proposal q and its best divergence are checkpointed too; q moves often at this lr
    "dpg-adaptive": (
        DistributionMatchingConfig,
        run_distribution_matching,
        ["proposal=adaptive", "learning_rate=0.02"],
    ),
    # and the pool of past policies (a snapshot every iteration, so the pool changes across the crash)
    "nash-past": (
        NashMDConfig,
        run_nash_md,
        [
            "opponent=past",
            "snapshot_every=1",
            "past_pool_size=2",
            "learning_rate=0.05",
            "unfinished_penalty=0",
        ],
    ),
}


@pytest.mark.parametrize("command", list(RESUMABLE))
def test_an_interrupted_online_run_resumes_to_the_same_policy(tiny_folder, tmp_path, monkeypatch, command):
    """4 steps straight == 2 steps, a crash, and a resume from the step-2 checkpoint (policy, value head,
    optimiser, RNG states, β, REINFORCE's moving baseline, DPG's proposal, Nash-MD's past policies)."""
    import tether.algorithms.online as online
    from tether.models import load_causal_lm

    config_cls, runner, specific = RESUMABLE[command]
    if command == "nash-past":  # gold scores a random tiny model's text all alike; lengths differ
        monkeypatch.setattr(
            online, "resolve_judge", lambda *a: FunctionJudge(lambda p, c: [float(len(x)) for x in c])
        )

    def overrides(out):
        base = [f"model={tiny_folder}", "reward=gym:reviews", f"output_dir={out}", "max_steps=4",
                "batch_size=4", "max_new_tokens=6", "progress=false",
                "tensorboard=false", "n_prompts=16", "save_every=2"]  # fmt: skip
        minibatch = [] if command == "nash-past" else ["minibatch_size=2"]
        adaptive = [] if command == "dpg-adaptive" else ["target_kl=0.5"]  # DPG has no loop β to adapt
        return base + minibatch + adaptive + specific

    def run(out, resume=False):
        extra = ["resume=true"] if resume else []
        return runner(load_config(config_cls, None, overrides(out) + extra))

    torch.manual_seed(123)
    run(tmp_path / "straight")

    real, calls = online.make_experience, {"n": 0}

    def crash_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(online, "make_experience", crash_on_third)
    torch.manual_seed(123)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(tmp_path / "resumed")
    monkeypatch.setattr(online, "make_experience", real)
    torch.manual_seed(999)  # whatever the RNG now holds, the checkpoint's RNG states take over
    run(tmp_path / "resumed", resume=True)

    straight = load_causal_lm(str(tmp_path / "straight")).state_dict()
    resumed = load_causal_lm(str(tmp_path / "resumed")).state_dict()
    for name, tensor in straight.items():
        torch.testing.assert_close(resumed[name], tensor, atol=1e-6, rtol=0, msg=name)
    logged = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    straight_log = [
        json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in logged] == [1, 2, 3, 4]
    assert [r["kl_coef"] for r in logged] == pytest.approx([r["kl_coef"] for r in straight_log])


def test_a_proposal_model_samples_and_supplies_pi_old(make_model, tokenizer):
    """Off-policy DPG: rows are sampled from q and π_old = log q, not log π_θ."""
    from tether.algorithms.online_batch import LoopHooks, reference_logprobs

    torch.manual_seed(0)
    module, proposal = PolicyValue(make_model(seed=0), "none"), make_model(seed=5)
    judge = FunctionJudge(lambda prompts, completions: [1.0] * len(prompts))
    config = DistributionMatchingConfig(max_new_tokens=4, group_size=2)
    experience = make_experience(
        module,
        module.policy,
        tokenizer,
        judge,
        ["review the lid."] * 2,
        config,
        0.0,
        LoopHooks(proposal=proposal),
    )
    torch.testing.assert_close(experience.old_logprobs, reference_logprobs(proposal, experience, 1.0))
    policy_logprobs = reference_logprobs(module.policy, experience, 1.0)
    assert not torch.allclose(experience.old_logprobs, policy_logprobs)


def test_adaptive_dpg_run_logs_its_proposal_decisions(tiny_folder, tmp_path):
    out = tmp_path / "dpg"
    config = load_config(
        DistributionMatchingConfig,
        None,
        [f"model={tiny_folder}", "reward=gym:reviews", f"output_dir={out}", "max_steps=3", "batch_size=2",
         "max_new_tokens=6", "progress=false", "tensorboard=false", "n_prompts=8", "proposal=adaptive",
         "learning_rate=0.01"],
    )  # fmt: skip
    row = run_distribution_matching(config)
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    updates = [r["proposal/updates"] for r in logged]
    assert updates == sorted(updates) and 0 <= updates[-1] <= 3  # a count that only grows
    previous = 0.0
    # q moves to π_θ exactly when π_θ's estimated KL(p* ‖ ·) beats q's (and any earlier best)
    for r in logged:
        moved = r["proposal/updates"] > previous
        if moved:
            assert r["proposal/kl_target_policy"] < r["proposal/kl_target_proposal"]
        previous = r["proposal/updates"]
    assert row["loss"] == row["loss"]


def test_nash_md_against_a_pool_of_past_policies(tiny_folder, tmp_path):
    out = tmp_path / "nash_past"
    config = load_config(
        NashMDConfig,
        None,
        [f"model={tiny_folder}", "reward=gym:reviews", f"output_dir={out}", "max_steps=3", "batch_size=2",
         "max_new_tokens=6", "progress=false", "tensorboard=false", "n_prompts=8", "opponent=past",
         "snapshot_every=1", "past_pool_size=2"],
    )  # fmt: skip
    run_nash_md(config)
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # the start, then a snapshot after every iteration, the oldest dropped beyond 2
    assert [r["opponent/pool_size"] for r in logged] == [2, 2, 2]
    assert all(0 <= r["nash/preference"] <= 1 for r in logged)
