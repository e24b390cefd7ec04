import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tether import TetherError
from tether.models import apply_lora, resolve_model, save_model, token_logprobs
from tether.ops import gather_logprobs, shift_labels


def batch(tokenizer):
    encoded = tokenizer(
        ["the lid is great.", "my phone arrived quickly. the screen is poor."],
        padding=True,
        return_tensors="pt",
    )
    labels = encoded["input_ids"].masked_fill(encoded["attention_mask"] == 0, -100)
    labels[:, :2] = -100  # a prompt that carries no loss
    return encoded["input_ids"], encoded["attention_mask"], labels


def full_logits_logprobs(model, input_ids, attention_mask, labels):
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    return gather_logprobs(logits, shift_labels(input_ids, labels))


def test_selected_head_equals_full_logits(make_model, tokenizer):
    model = make_model()
    input_ids, attention_mask, labels = batch(tokenizer)
    fast = token_logprobs(model, input_ids, attention_mask, labels)
    torch.testing.assert_close(fast, full_logits_logprobs(model, input_ids, attention_mask, labels))
    assert fast[:, :1].abs().sum() == 0  # the first target is a prompt token: no loss, no log-prob
    lora = apply_lora(make_model(), r=4, alpha=8)
    torch.testing.assert_close(
        token_logprobs(lora, input_ids, attention_mask, labels),
        full_logits_logprobs(lora, input_ids, attention_mask, labels),
    )


def test_saved_model_reloads_in_plain_transformers(tmp_path, make_model, tokenizer):
    model = make_model()
    (tmp_path / "metrics.jsonl").write_text("{}\n")  # an earlier file in the folder survives the save
    save_model(model, tokenizer, tmp_path)
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "metrics.jsonl").exists()
    assert not [p for p in tmp_path.parent.iterdir() if p.name.startswith(f".{tmp_path.name}.save-")]
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    reloaded_tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    input_ids, _, _ = batch(reloaded_tokenizer)
    torch.testing.assert_close(reloaded(input_ids).logits, model(input_ids).logits)
    assert reloaded_tokenizer.chat_template == tokenizer.chat_template


def test_lora_model_is_saved_merged(tmp_path, make_model, tokenizer):
    lora = apply_lora(make_model(), r=4, alpha=8)
    with torch.no_grad():  # move the adapters off zero so merging matters
        for name, parameter in lora.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.5)
    save_model(lora, tokenizer, tmp_path)
    assert not (tmp_path / "adapter_config.json").exists()
    assert "lora" not in json.dumps(json.loads((tmp_path / "config.json").read_text()))
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    input_ids, _, _ = batch(tokenizer)
    torch.testing.assert_close(reloaded(input_ids).logits, lora(input_ids).logits, atol=1e-4, rtol=1e-4)
    assert any("lora_B" in name for name, _ in lora.named_parameters())  # the caller's model is untouched


def test_model_spec_errors(tmp_path):
    with pytest.raises(TetherError, match="no such folder"):
        resolve_model(str(tmp_path / "missing"))
    with pytest.raises(TetherError, match=r"no config\.json"):
        resolve_model(str(tmp_path))
    (tmp_path / "m.gguf").write_bytes(b"")
    assert resolve_model(str(tmp_path)).gguf_file == "m.gguf"


def test_is_peft_model_answers_without_importing_peft(make_model):
    import subprocess
    import sys

    from tether.models.lora import is_peft_model

    # A fresh process: asking of a plain model does not import peft (about 0.2 s on the clock of a run).
    code = (
        "import sys, torch; from tether.models.lora import is_peft_model; "
        "print(is_peft_model(torch.nn.Linear(2, 2)), 'peft' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]
    model = make_model()
    assert not is_peft_model(model)
    assert is_peft_model(apply_lora(model, r=4, alpha=8))
