import math

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from tether.algorithms.reward_model import evaluate_pairs
from tether.data.tokenize import TokenizedExample, pad_collate
from tether.eval.reward import pairwise_metrics
from tether.judges import FunctionJudge, RewardModelJudge, ranks_from_scores
from tether.models import save_model
from tether.models.reward import ScalarReward, last_token_index, load_reward_model, reward_model_from_lm


def make_reward_model(make_model, tokenizer, tmp_path):
    save_model(make_model(seed=3), tokenizer, tmp_path / "lm")
    return reward_model_from_lm(str(tmp_path / "lm"), seed=0)


def test_last_token_index_left_and_right():
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert last_token_index(right).tolist() == [2, 4]
    assert last_token_index(left).tolist() == [4, 4]


def test_scalar_head_reads_last_real_token_under_any_padding(make_model, tokenizer, tmp_path):
    reward = ScalarReward(make_reward_model(make_model, tokenizer, tmp_path)).eval()
    rows = [
        tokenizer(t)["input_ids"]
        for t in ["the lid is great.", "my phone arrived quickly. the screen is poor."]
    ]
    alone = torch.stack(
        [reward(torch.tensor([r]), torch.ones(1, len(r), dtype=torch.long)) for r in rows]
    ).squeeze(-1)
    for side in ("right", "left"):
        batch = pad_collate([TokenizedExample(r, r) for r in rows], tokenizer.pad_token_id, side)
        torch.testing.assert_close(
            reward(batch["input_ids"], batch["attention_mask"]), alone, atol=1e-5, rtol=1e-5
        )
    # The head is linear in the last hidden state: r = w · h_last.
    model = reward.model
    with torch.no_grad():
        hidden = model.model(input_ids=torch.tensor([rows[0]])).last_hidden_state[0, -1]
    assert abs(float(model.score.weight[0].detach() @ hidden) - float(alone[0].detach())) < 1e-5


def test_reward_model_saves_as_plain_sequence_classifier(make_model, tokenizer, tmp_path):
    model = make_reward_model(make_model, tokenizer, tmp_path)
    save_model(model, tokenizer, tmp_path / "rm")
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm")
    assert plain.config.num_labels == 1
    judge = RewardModelJudge(load_reward_model(str(tmp_path / "rm")), tokenizer)
    expected = RewardModelJudge(model, tokenizer).score(["review the lid."] * 2, ["the lid is great.", "bad"])
    assert judge.score(["review the lid."] * 2, ["the lid is great.", "bad"]) == pytest.approx(
        expected, abs=1e-5
    )
    assert evaluate_pairs(ScalarReward(model), [], tokenizer.pad_token_id) == {}


def test_pairwise_metrics_hand_worked():
    chosen = torch.tensor([2.0, 1.0, 0.0, 3.0])
    rejected = torch.tensor([0.0, 2.0, 0.0, 1.0])
    # Differences 2, −1, 0, 2: accuracy counts strict wins → 2/4.
    metrics = pairwise_metrics(chosen, rejected)
    assert metrics["accuracy"] == 0.5
    expected_nll = (2 * math.log1p(math.exp(-2)) + math.log1p(math.exp(1)) + math.log(2)) / 4
    assert abs(metrics["bt_nll"] - expected_nll) < 1e-9
    assert sum(row["pairs"] for row in metrics["calibration"]) == 4
    assert metrics["chosen_mean"] == 1.5 and metrics["rejected_mean"] == 0.75


def test_function_judge_and_ranks():
    judge = FunctionJudge(lambda p, c: len(c), batched=False)
    assert judge.score(["x", "y"], ["ab", "abcd"]) == [2.0, 4.0]
    assert ranks_from_scores([0.5, 2.0, 0.5, -1.0]) == [2, 1, 2, 4]


def test_lora_reward_model_trains_head_and_saves_merged(make_model, tokenizer, tmp_path):
    from tether.models import apply_lora

    model = apply_lora(make_reward_model(make_model, tokenizer, tmp_path), r=4, alpha=8, task_type="SEQ_CLS")
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert any("lora_" in name for name in trainable) and any("score" in name for name in trainable)
    assert not any("embed_tokens" in name for name in trainable)  # the backbone itself stays frozen
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.5)
    save_model(model, tokenizer, tmp_path / "rm")
    batch = pad_collate([TokenizedExample([5, 6, 7], [5, 6, 7])], tokenizer.pad_token_id)
    with torch.no_grad():
        expected = ScalarReward(model)(batch["input_ids"], batch["attention_mask"])
        got = ScalarReward(load_reward_model(str(tmp_path / "rm")))(
            batch["input_ids"], batch["attention_mask"]
        )
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
