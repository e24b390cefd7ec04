"""Multi-turn rollouts: the policy's tokens as sampled, the environment's as masked context."""

from __future__ import annotations

import pytest
import torch

from tether.algorithms.online_batch import forward
from tether.data.templates import CHATML_TEMPLATE, PLAIN_TEMPLATE, render
from tether.models.value import PolicyValue
from tether.rollout.multiturn import chat_delta, sample_episodes


class Scripted:
    """Answers every turn with a tool message naming the turn, and ends after ``turns`` turns."""

    name = "scripted"

    def __init__(self, turns: int = 2) -> None:
        self.turns, self.actions = turns, []

    def reset(self, prompt):
        return f"Q: {prompt}"

    def step(self, action_text):
        self.actions.append(action_text)
        if len(self.actions) >= self.turns:
            return None, 1.0 + len(action_text) / 100, True
        return f"result {len(self.actions)}", 0.5, False


@pytest.mark.parametrize("template", [PLAIN_TEMPLATE, CHATML_TEMPLATE])
def test_chat_delta_closes_the_turn_and_opens_the_next(tokenizer, template):
    saved = tokenizer.chat_template
    tokenizer.chat_template = template
    try:
        messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "<calc>2+2</calc>"}]
        prefix = render(tokenizer, messages[:1], add_generation_prompt=True) + "<calc>2+2</calc>"
        whole = render(tokenizer, [*messages, {"role": "tool", "content": "4"}], add_generation_prompt=True)
        # Unstopped: everything after the content; stopped: less the stop token's own text.
        assert prefix + chat_delta(tokenizer, messages, "4", False, "") == whole
        stop_text = "<|im_end|>" if template == CHATML_TEMPLATE else tokenizer.eos_token
        assert prefix + stop_text + chat_delta(tokenizer, messages, "4", True, stop_text) == whole
    finally:
        tokenizer.chat_template = saved


def test_episodes_mask_the_environment_and_keep_the_policys_tokens(make_model, tokenizer):
    torch.manual_seed(0)
    model = make_model()
    envs = []

    def make_env():
        envs.append(Scripted(turns=2))
        return envs[-1]

    experience, rewards = sample_episodes(
        model,
        tokenizer,
        ["review the lid.", "review it."],
        make_env,
        group_size=2,
        max_new_tokens=5,
        max_turns=3,
    )
    assert len(envs) == 4 and all(len(env.actions) == 2 for env in envs)
    for row, env in enumerate(envs):
        real = experience.attention_mask[row, experience.prompt_length :].bool()
        tokens = experience.sequences[row, experience.prompt_length :][real]
        owner = experience.response_mask[row][real].bool()
        # Policy spans (mask 1) decode to exactly the texts the environment was given, in order.
        spans, current = [], []
        for token, mine in zip(tokens.tolist(), owner.tolist()):
            if mine:
                current.append(token)
            elif current:
                spans.append(current)
                current = []
        spans.append(current)
        assert [tokenizer.decode(s, skip_special_tokens=True).strip() for s in spans] == env.actions
        # The environment's span (mask 0) is the tool message the template renders.
        tool = tokenizer.decode(tokens[~owner].tolist(), skip_special_tokens=False)
        assert "result 1" in tool
        assert rewards[row].item() == pytest.approx(0.5 + 1.0 + len(env.actions[-1]) / 100)
    assert experience.extras["turns"].tolist() == [2.0] * 4
    assert experience.completions[0] == "\n".join(envs[0].actions)
    # Log-probs of the policy's tokens in context: finite where the mask is 1, ignored elsewhere.
    module = PolicyValue(model, "none").eval()
    with torch.no_grad():
        logprobs = forward(module, experience, 1.0)["logprobs"]
    mine = experience.response_mask.bool()
    assert torch.isfinite(logprobs[mine]).all() and (logprobs[mine] < 0).all()
    assert (experience.labels()[:, experience.prompt_length :][~mine] == -100).all()


def test_the_calculator_answers_a_scripted_tool_call(tokenizer, make_model, monkeypatch):
    # A policy that writes "<calc>2*3</calc>" and then "= 6": the calculator's answer is the tool message.
    import tether.rollout.multiturn as multiturn
    from tether.envs import resolve_env

    script = iter(["<calc>17+25</calc>", "17 + 25 = 42"])

    def fake_sample(model, input_ids, attention_mask, max_new_tokens, stops, pad, **kwargs):
        text = next(script)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [stops[0]]
        return torch.tensor([ids])

    monkeypatch.setattr(multiturn, "sample_responses", fake_sample)
    experience, rewards = sample_episodes(
        make_model(), tokenizer, ["what is 17 + 25?"], resolve_env("calculator"), max_new_tokens=20
    )
    assert rewards.tolist() == [1.0] and experience.finished.tolist() == [True]
    tool = experience.sequences[0, experience.prompt_length :][experience.response_mask[0] == 0]
    assert "42" in tokenizer.decode(tool[tool != tokenizer.pad_token_id].tolist())
