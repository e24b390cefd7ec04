"""End to end on the embedded default (evaluation shortened): SFT answers held-out prompts better than pre-training,
collected rankings are well formed, the reward model agrees with the gold judge on held-out pairs, and the report's
ladder of language models (n-gram → RNN → Transformer) is measured on the same held-out text."""

import json

import pytest
from transformers import AutoModelForCausalLM

from tether.pipeline import run_pipeline


@pytest.mark.slow
def test_pipeline_sft_beats_pretrained_and_skips_done_stages(default_pipeline):
    tmp_path, config, summary = default_pipeline
    pretrained, sft = summary["results"]["pretrained"], summary["results"]["sft"]
    assert sft["response_nll"] < pretrained["response_nll"] - 1.0
    assert sft["follow_rate"] >= 0.8 and pretrained["follow_rate"] <= 0.2
    assert (
        f"| sft | {sft['response_nll']:.3f} | {sft['follow_rate']:.1%} |"
        in (tmp_path / "report.md").read_text()
    )
    AutoModelForCausalLM.from_pretrained(tmp_path / "sft")  # an ordinary HF folder

    rankings = [
        json.loads(line) for line in (tmp_path / "collect" / "rankings.jsonl").read_text().splitlines()
    ]
    assert len(rankings) == 512 and all(len(r["completions"]) == 4 == len(r["ranks"]) for r in rankings)
    n_pairs = len((tmp_path / "collect" / "pairs.jsonl").read_text().splitlines())
    assert n_pairs == sum(sum(a < b for a in r["ranks"] for b in r["ranks"]) for r in rankings)
    assert summary["reward_model"]["accuracy"] >= 0.9  # the bar; 95.8% with the full default

    # DPO on the collected rankings raises the gold reward of the SFT policy's samples, at a bounded KL.
    policies = summary["policies"]
    assert policies["sft"]["kl"] == 0.0
    assert policies["dpo"]["gold"] > policies["sft"]["gold"] + 0.3
    assert 0 < policies["dpo"]["kl"] < 20
    # PPO (value head, reward − β·KL) and GRPO (group baseline, KL loss term) raise it too, KL bounded.
    for name in ("ppo", "grpo"):
        assert policies[name]["gold"] > policies["sft"]["gold"] + 0.2, name
        assert 0 < policies[name]["kl"] < 30, name
    # Without the KL tether the same PPO drifts far and hacks the reward model: gold ends below the tethered run.
    assert policies["ppo_no_kl"]["kl"] > 2 * policies["ppo"]["kl"]
    assert policies["ppo_no_kl"]["gold"] < policies["ppo"]["gold"]
    assert policies["sft"]["win_rate"] == 0.5 and policies["dpo"]["win_rate"] > 0.7  # vs SFT under gold
    # The ladder on the same held-out documents: each rung beats the one below it; the RNN trained for seconds.
    ladder = summary["ladder"]["models"]
    assert list(ladder) == ["ngram", "rnn", "pretrained", "sft"]
    ppl = {name: rung["ppl_per_word"] for name, rung in ladder.items()}
    assert ppl["pretrained"] < ppl["rnn"] < ppl["ngram"] < 10, ppl
    assert ladder["rnn"]["parameters"] > 2_000_000 > ladder["pretrained"]["parameters"]
    assert ladder["rnn"]["train_seconds"] < ladder["pretrained"]["train_seconds"]
    assert all(len(rung["samples"]) == 3 for rung in ladder.values())
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "pretrain_rnn").config.model_type == "tether_rnn"
    report = (tmp_path / "report.md").read_text()
    assert f"| {ladder['rnn']['label']} | {ppl['rnn']:.2f} |" in report
    # Every training stage's efficiency is in the report: tokens/s and MFU against the measured peak.
    efficiency = summary["efficiency"]
    assert {"pretrain", "sft", "reward_model", "dpo", "ppo", "grpo", "pretrain_rnn"} <= set(efficiency)
    assert all(e["tokens_per_s"] > 0 and 0 < e["mfu"] < 10 for e in efficiency.values())
    sft_row = efficiency["sft"]
    assert f"| sft | {summary['seconds']['sft']:.1f} | {sft_row['tokens_per_s']:.0f} |" in report
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "Reward hacking" in page
    assert "n-gram → RNN → Transformer" in page

    again = run_pipeline(config)  # every stage is done: only evaluation runs
    assert set(again["seconds"]) == {"evaluate"}
    assert again["results"]["sft"]["response_nll"] == pytest.approx(sft["response_nll"])
    assert again["ladder"]["models"]["rnn"]["train_seconds"] == ladder["rnn"]["train_seconds"]  # kept on disk
