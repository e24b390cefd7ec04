"""Multi-turn rollouts: the policy and an environment take turns in one chat transcript.

Letters as in ``experience.py``: N rows (B prompts × G episodes each), P prompt tokens, A tokens after
the prompt. An episode's response region holds every policy turn and every environment (tool) message
after the first observation, in order; ``response_mask`` is 1 on the policy's own tokens only, so the
loss, the KL and the log-probs cover what the policy chose, and the environment's tokens are context.
The policy's tokens are kept exactly as sampled (never re-tokenised from text), so log π_old, log π_ref
and the importance ratios of later epochs are those of the sampled tokens in their context.

Each turn, the rows whose episodes go on are sampled together (the lean sampler or ``generate``, up to
``max_new_tokens`` or a stop token); each turn's text goes to its row's ``env.step``; an observation is
appended as a ``tool`` message with the tokenizer's chat template, followed by the next generation prompt.
An episode ends when its environment says done, or after ``max_turns`` policy turns. Its score is the sum
of the rewards of its turns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from tether import TetherError
from tether.data.templates import render
from tether.envs.base import Environment, checked_step
from tether.rollout.experience import Experience
from tether.rollout.generate import sample_responses, stop_token_ids


def chat_delta(
    tokenizer: Any, messages: list[dict[str, str]], observation: str, stopped: bool, stop_text: str
) -> str:
    """The text between the end of the policy's last turn (its content, and its stop token when it
    stopped) and the next generation point: the rest of the assistant turn's closing, the tool message and
    the generation prompt. ``messages`` ends with that assistant turn."""
    before = render(tokenizer, messages[:-1], add_generation_prompt=True)
    closed = render(tokenizer, messages)
    after = render(
        tokenizer, [*messages, {"role": "tool", "content": observation}], add_generation_prompt=True
    )
    content = messages[-1]["content"]
    if not (closed.startswith(before + content) and after.startswith(closed)):
        raise TetherError(
            "multi-turn rollout: the tokenizer's chat template does not render conversations prefix by "
            "prefix, so tool messages cannot be appended to the sampled tokens"
        )
    closing = closed[len(before) + len(content) :]  # e.g. "<|im_end|>\n"
    if stopped and closing.startswith(stop_text):
        closing = closing[len(stop_text) :]  # the sampled stop token already wrote it
    return closing + after[len(closed) :]


def sample_episodes(
    policy: Any,
    tokenizer: Any,
    prompts: list[Any],
    make_env: Callable[[], Environment],
    group_size: int = 1,
    max_new_tokens: int = 64,
    max_turns: int = 4,
    temperature: float = 1.0,
    top_p: float = 1.0,
) -> tuple[Experience, torch.Tensor]:
    """G episodes per prompt; returns the Experience (without log-probs) and each episode's reward (N,)."""
    rows = [p for p in prompts for _ in range(group_size)]
    envs = [make_env() for _ in rows]
    name = getattr(envs[0], "name", type(envs[0]).__name__) if envs else "environment"
    stops = stop_token_ids(policy, tokenizer)
    device = next(policy.parameters()).device
    messages, prompt_ids, response_ids, policy_token, rewards = [], [], [], [], []
    for env, prompt in zip(envs, rows):
        first = env.reset(prompt)
        if not isinstance(first, str):
            raise TetherError(f"environment '{name}': reset must return a string, got {type(first).__name__}")
        messages.append([{"role": "user", "content": first}])
        rendered = render(tokenizer, messages[-1], add_generation_prompt=True)
        prompt_ids.append(tokenizer(rendered, add_special_tokens=False)["input_ids"])
        response_ids.append([])
        policy_token.append([])
        rewards.append(0.0)
    done = [False] * len(rows)
    stopped = [False] * len(rows)  # the last policy turn ended with a stop token
    was_training = policy.training
    policy.eval()
    for _ in range(max_turns):
        active = [i for i in range(len(rows)) if not done[i]]
        if not active:
            break
        contexts = [prompt_ids[i] + response_ids[i] for i in active]
        width = max(len(c) for c in contexts)
        pad = tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(c)) + c for c in contexts], device=device)
        attention = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in contexts], device=device)
        with torch.no_grad():
            turns = sample_responses(
                policy, input_ids, attention, max_new_tokens, stops, pad, temperature=temperature, top_p=top_p
            )
        for row, turn in zip(active, turns.tolist()):
            end = next((k + 1 for k, token in enumerate(turn) if token in stops), len(turn))
            turn = turn[:end]
            stopped[row] = bool(turn) and turn[-1] in stops
            text = tokenizer.decode(turn, skip_special_tokens=True).strip()
            response_ids[row] += turn
            policy_token[row] += [1] * len(turn)
            messages[row].append({"role": "assistant", "content": text})
            observation, reward, finished = checked_step(name, envs[row].step(text))
            rewards[row] += reward
            if finished:
                done[row] = True
            elif observation is not None:
                stop_text = tokenizer.decode(turn[-1:]) if stopped[row] else ""
                delta = chat_delta(tokenizer, messages[row], observation, stopped[row], stop_text)
                tool_ids = tokenizer(delta, add_special_tokens=False)["input_ids"]
                response_ids[row] += tool_ids
                policy_token[row] += [0] * len(tool_ids)
                messages[row].append({"role": "tool", "content": observation})
    policy.train(was_training)
    experience = assemble_episodes(
        rows, prompt_ids, response_ids, policy_token, tokenizer.pad_token_id, device
    )
    experience.finished = torch.tensor([d and s for d, s in zip(done, stopped)], device=device)
    experience.completions = [
        "\n".join(m["content"] for m in conversation[1:] if m["role"] == "assistant")
        for conversation in messages
    ]
    experience.extras["turns"] = torch.tensor(
        [float(sum(m["role"] == "assistant" for m in conversation)) for conversation in messages],
        device=device,
    )
    return experience, torch.tensor(rewards, dtype=torch.float32, device=device)


def assemble_episodes(
    prompts: list[Any],
    prompt_ids: list[list[int]],
    response_ids: list[list[int]],
    policy_token: list[list[int]],
    pad_token_id: int,
    device: torch.device | str = "cpu",
) -> Experience:
    """The Experience of the episodes' token lists: prompts left-padded to P, responses right-padded to A,
    ``response_mask`` 1 on the policy's tokens, attention on every real token (the policy's and the tool's)."""
    width_p = max(len(ids) for ids in prompt_ids)
    width_a = max(1, max(len(ids) for ids in response_ids))
    sequences, attention, mask = [], [], []
    for p_ids, r_ids, owner in zip(prompt_ids, response_ids, policy_token):
        left, right = width_p - len(p_ids), width_a - len(r_ids)
        sequences.append([pad_token_id] * left + p_ids + r_ids + [pad_token_id] * right)
        attention.append([0] * left + [1] * (len(p_ids) + len(r_ids)) + [0] * right)
        mask.append(owner + [0] * right)
    response_mask = torch.tensor(mask, device=device)
    return Experience(
        prompts=list(prompts),
        completions=[""] * len(prompts),
        sequences=torch.tensor(sequences, device=device),
        attention_mask=torch.tensor(attention, device=device),
        response_mask=response_mask,
        finished=torch.zeros(len(prompts), dtype=torch.bool, device=device),
        old_logprobs=torch.zeros(response_mask.shape, device=device),
    )
