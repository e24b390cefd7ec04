"""Pre-training a tiny Transformer or RNN: the RNN trains on the Transformer's own tokenizer and comes out an
ordinary HF folder; fields a model would not honour are refused."""

import json

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from tether.algorithms.pretrain import run_pretrain
from tether.config import ConfigError, PretrainConfig, load_config
from tether.gym import get_task
from tether.models import TetherRNNForCausalLM, save_model


def small_run(tmp_path, name: str, *overrides: str) -> PretrainConfig:
    data = tmp_path / "corpus.jsonl"
    if not data.exists():
        texts = get_task("reviews").pretrain_texts()[:150]
        data.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return load_config(
        PretrainConfig,
        None,
        [
            f"data={data}",
            f"output_dir={tmp_path / name}",
            "seq_len=32",
            "batch_size=8",
            "max_steps=6",
            "eval_fraction=0.1",
            "log_every=1",
            "progress=false",
            "tensorboard=false",
            *([] if any(o.startswith("model=") for o in overrides) else ["vocab_size=300"]),
            *overrides,
        ],
    )


def test_rnn_pretrains_on_the_transformers_tokenizer(tmp_path):
    run_pretrain(small_run(tmp_path, "transformer", "hidden_size=16", "num_layers=1", "num_heads=2"))
    transformer = tmp_path / "transformer"
    first = small_run(
        tmp_path, "rnn", "architecture=rnn", "rnn_hidden_size=32", "rnn_cell=gru", f"tokenizer={transformer}"
    )
    metrics = run_pretrain(first)
    folder = tmp_path / "rnn"
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert type(model) is TetherRNNForCausalLM
    assert (model.config.cell, model.config.hidden_size, model.config.num_hidden_layers) == ("gru", 32, 1)
    assert (folder / "tokenizer.json").read_text() == (transformer / "tokenizer.json").read_text()
    assert model.config.vocab_size == len(AutoTokenizer.from_pretrained(transformer))
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert rows[-1]["step"] == 6 and len(losses) == 6 and losses[-1] < losses[0] - 0.3  # it learns
    assert metrics["eval/loss"] > 0
    # Continuing the saved RNN: architecture=rnn accepts the folder.
    run_pretrain(small_run(tmp_path, "rnn2", "architecture=rnn", f"model={folder}", "max_steps=1"))
    assert type(AutoModelForCausalLM.from_pretrained(tmp_path / "rnn2")) is TetherRNNForCausalLM


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["architecture=rnn", "num_heads=2"], "field 'num_heads': applies to the other architecture"),
        (["architecture=rnn", "hidden_size=64"], "field 'hidden_size': applies to the other architecture"),
        (["rnn_layers=2"], "field 'rnn_layers': applies to the other architecture"),
        (["model=MODEL", "tokenizer=MODEL"], "field 'tokenizer': applies to a new model"),
        (["model=MODEL", "rnn_cell=gru"], "field 'rnn_cell': applies to a new model"),
        (["model=MODEL", "architecture=rnn"], "field 'architecture': rnn, but model"),
    ],
)
def test_fields_the_model_would_not_honour_are_refused(tmp_path, make_model, tokenizer, overrides, message):
    save_model(make_model(), tokenizer, tmp_path / "llama")
    overrides = [o.replace("MODEL", str(tmp_path / "llama")) for o in overrides]
    with pytest.raises(ConfigError, match=message):
        run_pretrain(small_run(tmp_path, "out", *overrides))
    assert not (tmp_path / "out" / "config.json").exists()
