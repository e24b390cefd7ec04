"""Constitutional AI, supervised phase (Bai et al. 2022, "Constitutional AI: Harmlessness from AI
Feedback", §3.1): the model answers a (red-team) prompt, is asked to critique its answer against a
principle, then to revise it; the revision becomes SFT data. Rounds of critique and revision may repeat,
each with a freshly drawn principle, as in the paper.

The conversation is played in the model's own chat template, one turn each:

    user: PROMPT                     assistant: RESPONSE
    user: CRITIQUE REQUEST           assistant: CRITIQUE
    user: REVISION REQUEST           assistant: REVISION

Output: ``sft.jsonl`` — ``{"messages": [prompt turns…, {"role": "assistant", "content": REVISION}]}``,
ready for ``tether sft`` — and ``trace.jsonl`` with every step (principle, response, critiques,
revisions). The RL phase (AI preference labels → RM or DPO) is ``tether collect judge=JUDGE.yaml``
followed by ``tether reward-model`` or ``tether dpo``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from tether import TetherError
from tether.config import CritiqueReviseConfig, save_config
from tether.data.readers import write_jsonl
from tether.judges.constitution import load_constitution
from tether.models import load_causal_lm, load_tokenizer
from tether.rollout import generate
from tether.specs import load_prompts

CRITIQUE_PREFIX = "Critique request: "
REVISION_PREFIX = "Revision request: "


def _messages(prompt: Any) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def _reply(conversations: list[list[dict[str, str]]], model: Any, tokenizer: Any, config: Any) -> list[str]:
    """The model's next assistant turn in each conversation."""
    sampling = {"do_sample": config.temperature > 0, "temperature": max(config.temperature, 1e-5)}
    result = generate(
        model,
        tokenizer,
        conversations,
        max_new_tokens=config.max_new_tokens,
        batch_size=config.batch_size,
        **sampling,
    )
    return result.completions


def critique_and_revise(
    model: Any, tokenizer: Any, prompts: list[Any], principles: list[Any], config: CritiqueReviseConfig
) -> list[dict[str, Any]]:
    """One trace per prompt: the first response, then ``config.revisions`` rounds of critique → revision."""
    rng = random.Random(config.seed)
    traces: list[dict[str, Any]] = []
    for start in tqdm(range(0, len(prompts), config.batch_size), desc="critique-revise", unit="batch"):
        batch = prompts[start : start + config.batch_size]
        conversations = [_messages(p) for p in batch]
        responses = _reply(conversations, model, tokenizer, config)
        chunk = [{"prompt": p, "response": r, "rounds": []} for p, r in zip(batch, responses)]
        current = list(responses)
        for conversation, answer in zip(conversations, current):
            conversation.append({"role": "assistant", "content": answer})
        for _ in range(config.revisions):
            drawn = [rng.choice(principles) for _ in batch]
            for conversation, principle in zip(conversations, drawn):
                conversation.append({"role": "user", "content": CRITIQUE_PREFIX + principle.critique})
            critiques = _reply(conversations, model, tokenizer, config)
            for conversation, critique, principle in zip(conversations, critiques, drawn):
                conversation.append({"role": "assistant", "content": critique})
                conversation.append({"role": "user", "content": REVISION_PREFIX + principle.revision})
            revisions = _reply(conversations, model, tokenizer, config)
            for trace, principle, critique, revision in zip(chunk, drawn, critiques, revisions):
                trace["rounds"].append(
                    {"principle": principle.name, "critique": critique, "revision": revision}
                )
            # An empty revision keeps the previous answer; the next round critiques the latest answer.
            current = [r if r.strip() else c for r, c in zip(revisions, current)]
            for conversation, answer in zip(conversations, current):
                conversation.append({"role": "assistant", "content": answer})
        for trace, final in zip(chunk, current):
            trace["revision"] = final
        traces += chunk
    return traces


def run_critique_revise(config: CritiqueReviseConfig) -> dict[str, float]:
    """Write ``sft.jsonl`` (prompt → final revision) and ``trace.jsonl``; return counts."""
    constitution = load_constitution(config.constitution)
    principles = [p for p in constitution.require("critique") if p.revision]
    if not principles:
        raise TetherError(f"constitution '{constitution.name}': no principle has both critique and revision")
    prompts = load_prompts(config.prompts, config.n_prompts, config.seed)
    model = load_causal_lm(config.model, config.trust_remote_code)
    tokenizer = load_tokenizer(config.model, config.trust_remote_code)
    torch.manual_seed(config.seed)
    traces = critique_and_revise(model, tokenizer, prompts, principles, config)
    rows = [
        {"messages": [*_messages(t["prompt"]), {"role": "assistant", "content": t["revision"]}]}
        for t in traces
        if t["revision"].strip()
    ]
    out = Path(config.output_dir)
    write_jsonl(out / "trace.jsonl", traces)
    write_jsonl(out / "sft.jsonl", rows)
    save_config(config, out / "tether_config.yaml")
    changed = sum(t["revision"].strip() != t["response"].strip() for t in traces)
    return {"prompts": len(prompts), "sft_examples": len(rows), "revised": changed / max(len(traces), 1)}
