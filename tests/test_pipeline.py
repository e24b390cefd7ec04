"""End to end on the embedded default (shortened): SFT answers held-out prompts better than pre-training."""

import pytest
from transformers import AutoModelForCausalLM

from tether.config import PipelineConfig, load_config
from tether.pipeline import run_pipeline


@pytest.mark.slow
def test_pipeline_sft_beats_pretrained_and_skips_done_stages(tmp_path):
    config = load_config(
        PipelineConfig,
        None,
        [
            f"output_dir={tmp_path}",
            "pretrain.max_steps=200",
            "sft.max_steps=120",
            "pretrain.progress=false",
            "sft.progress=false",
            "evaluate.n_prompts=32",
            "evaluate.n_examples=100",
        ],
    )
    summary = run_pipeline(config)
    pretrained, sft = summary["results"]["pretrained"], summary["results"]["sft"]
    assert sft["response_nll"] < pretrained["response_nll"] - 1.0
    assert sft["follow_rate"] >= 0.8 and pretrained["follow_rate"] <= 0.2
    assert f"| sft | {sft['response_nll']:.3f} | {sft['follow_rate']:.1%} |" in (tmp_path / "report.md").read_text()
    AutoModelForCausalLM.from_pretrained(tmp_path / "sft")  # an ordinary HF folder

    again = run_pipeline(config)  # both stages are done: only evaluation runs
    assert set(again["seconds"]) == {"evaluate"}
    assert again["results"]["sft"]["response_nll"] == pytest.approx(sft["response_nll"])
