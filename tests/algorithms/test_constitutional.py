"""The critique–revise loop (Constitutional AI's supervised phase) and judge-labelled collection."""

from __future__ import annotations

import json

import pytest
import torch

from tether.algorithms.constitutional import CRITIQUE_PREFIX, REVISION_PREFIX, run_critique_revise
from tether.cli import main
from tether.config import CritiqueReviseConfig
from tether.data.formats import parse_sft
from tether.data.readers import read_records
from tether.judges.constitution import load_constitution
from tether.models import load_causal_lm, load_tokenizer, save_model
from tether.rollout import generate


@pytest.fixture
def tiny_folder(make_model, tokenizer, tmp_path):
    """A random tiny model whose greedy text is not blank: a fresh one repeats "\n", which strips to ''."""
    model = make_model(seed=3)
    blank = [i for i in range(len(tokenizer)) if not tokenizer.decode([i], skip_special_tokens=True).strip()]
    with torch.no_grad():
        model.get_output_embeddings().weight[blank] = 0.0
    save_model(model, tokenizer, tmp_path / "tiny")
    return str(tmp_path / "tiny")


def test_critique_revise_writes_well_formed_sft_data_from_the_models_own_turns(tiny_folder, tmp_path):
    out = tmp_path / "cai"
    config = CritiqueReviseConfig(
        output_dir=str(out),
        model=tiny_folder,
        n_prompts=5,
        revisions=2,
        max_new_tokens=12,
        temperature=0.0,  # greedy: every turn can be replayed below
        batch_size=3,
    )
    metrics = run_critique_revise(config)
    assert metrics["prompts"] == 5
    traces = [json.loads(line) for line in (out / "trace.jsonl").read_text().splitlines()]
    records = read_records(str(out / "sft.jsonl"))
    assert len(traces) == 5 and len(records) == metrics["sft_examples"] >= 1
    for record in records:
        example = parse_sft(record)  # the SFT reader accepts it: a user turn, then the trained revision
        assert [m["role"] for m in example.messages] == ["user", "assistant"]
        assert example.trained == (False, True)
        assert example.messages[1]["content"].strip()

    # Replay the first trace's conversation turn by turn with the same greedy model: same critique and revision.
    model, tokenizer = load_causal_lm(tiny_folder), load_tokenizer(tiny_folder)
    principles = {p.name: p for p in load_constitution(config.constitution).principles}
    trace = traces[0]
    conversation = [{"role": "user", "content": trace["prompt"]}]
    reply = generate(model, tokenizer, [conversation], max_new_tokens=12).completions[0]
    assert reply == trace["response"]
    answer = reply
    conversation.append({"role": "assistant", "content": answer})
    for round_ in trace["rounds"]:
        principle = principles[round_["principle"]]
        conversation.append({"role": "user", "content": CRITIQUE_PREFIX + principle.critique})
        critique = generate(model, tokenizer, [conversation], max_new_tokens=12).completions[0]
        assert critique == round_["critique"]
        conversation += [
            {"role": "assistant", "content": critique},
            {"role": "user", "content": REVISION_PREFIX + principle.revision},
        ]
        revision = generate(model, tokenizer, [conversation], max_new_tokens=12).completions[0]
        assert revision == round_["revision"]
        answer = revision if revision.strip() else answer
        conversation.append({"role": "assistant", "content": answer})
    assert trace["revision"] == answer
    assert len(trace["rounds"]) == 2


def test_collect_with_an_llm_judge_yaml_and_the_agreement_command(tiny_folder, tmp_path, capsys):
    judge = tmp_path / "judge.yaml"
    judge.write_text(f"model: {tiny_folder}\nkind: pairwise\nconstitution: builtin:reviews\nbatch_size: 4\n")
    collect = tmp_path / "collect"
    torch.manual_seed(0)
    code = main(
        ["collect", f"policy={tiny_folder}", f"judge={judge}", "n_prompts=3", "num_samples=3",
         "max_new_tokens=8", f"output_dir={collect}"]
    )  # fmt: skip
    assert code == 0
    rankings = [json.loads(line) for line in (collect / "rankings.jsonl").read_text().splitlines()]
    for row in rankings:  # round-robin scores: mean win probability against the other two
        assert sum(row["scores"]) == pytest.approx(len(row["scores"]) / 2, abs=1e-5)
        assert all(0 < s < 1 for s in row["scores"])
    capsys.readouterr()
    code = main(["judge-agreement", f"judge={judge}", f"pairs={collect / 'pairs.jsonl'}", "gold=gym:reviews"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    n = report["pairs"]
    assert n + report["gold_ties_dropped"] == sum(1 for _ in (collect / "pairs.jsonl").open())
    for key in ("agreement/first_order", "agreement/swapped", "position_bias_rate", "picks_first"):
        assert 0 <= report[key] <= 1
        assert (report[key] * n) % 0.5 == pytest.approx(0, abs=1e-9)  # counts of pairs (ties count ½)


def test_a_pairwise_judge_needs_groups_for_rl_rewards(tiny_folder, tmp_path, capsys):
    judge = tmp_path / "judge.yaml"
    judge.write_text(f"model: {tiny_folder}\nkind: pairwise\n")
    code = main(["score", f"data={write_one(tmp_path)}", f"judge={judge}"])
    assert code != 0
    assert "at least 2 responses" in capsys.readouterr().err


def write_one(tmp_path):
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps({"prompt": "review the phone.", "completion": "great."}) + "\n")
    return path
