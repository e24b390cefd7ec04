"""The recurrent LM (models/rnn.py): a distribution at every step, the lecture's loss computed by hand, padding
and packing read as separate sequences, a save/load round trip, and sampling step by step."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from tether import TetherError
from tether.models import (
    TetherRNNConfig,
    TetherRNNForCausalLM,
    build_rnn_model,
    load_causal_lm,
    save_model,
    token_logprobs,
)
from tether.models.forward import shares_prefixes
from tether.models.reward import reward_model_from_lm
from tether.rollout import generate
from tether.rollout.recurrent import sample_tokens, supports


def tiny_rnn(cell: str, vocab_size: int = 5, hidden_size: int = 3, num_layers: int = 1, seed: int = 0):
    """A recurrent LM with fixed, far-from-zero weights (so every step's distribution is distinct)."""
    config = TetherRNNConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        cell=cell,
        pad_token_id=0,
    )
    model = TetherRNNForCausalLM(config).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    return model.requires_grad_(False)


def hand_hidden_states(model, tokens: list[int]) -> list[torch.Tensor]:
    """h(1) … h(T) of one layer, by the cell's equations written out (float64), starting from h(0) = 0."""
    rnn, embed = model.model.rnn, model.model.embed_tokens.weight.double()
    w_ih, w_hh = rnn.weight_ih_l0.double(), rnn.weight_hh_l0.double()
    b_ih, b_hh = rnn.bias_ih_l0.double(), rnn.bias_hh_l0.double()
    h = torch.zeros(rnn.hidden_size, dtype=torch.float64)
    c = torch.zeros_like(h)
    states = []
    for token in tokens:
        e = embed[token]
        if model.config.cell == "lstm":  # gates in PyTorch's order: input, forget, cell, output
            i, f, g, o = (w_ih @ e + b_ih + w_hh @ h + b_hh).chunk(4)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
        else:  # GRU: reset, update, new
            xr, xz, xn = (w_ih @ e + b_ih).chunk(3)
            hr, hz, hn = (w_hh @ h + b_hh).chunk(3)
            r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
            n = torch.tanh(xn + r * hn)
            h = (1 - z) * n + z * h
        states.append(h)
    return states


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_every_step_gives_a_distribution(cell):
    model = tiny_rnn(cell, vocab_size=11, hidden_size=6, num_layers=2)
    input_ids = torch.tensor([[1, 4, 2, 9, 3, 3, 7], [10, 2, 5, 5, 1, 0, 6]])
    with torch.no_grad():
        probs = torch.softmax(model(input_ids=input_ids).logits.double(), dim=-1)  # (B, T, V)
    assert probs.shape == (2, 7, 11)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 7, dtype=torch.float64), atol=1e-6, rtol=0)
    assert (probs > 0).all()
    # A distribution per step, not one per sequence: the steps differ.
    assert (probs[0, 1:] - probs[0, :-1]).abs().amax() > 1e-3


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_loss_is_the_mean_of_per_step_cross_entropies_by_hand(cell):
    model = tiny_rnn(cell)  # vocabulary 5, width 3
    tokens = [1, 3, 0, 4]
    states = hand_hidden_states(model, tokens)
    embed = model.model.embed_tokens.weight.double()  # U = E (tied)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    # J(t) = −log ŷ(t)[x(t+1)], ŷ(t) = softmax(U h(t)), for t = 1 … T−1.
    per_step = [-torch.log_softmax(embed @ states[t], dim=0)[tokens[t + 1]] for t in range(len(tokens) - 1)]
    input_ids = torch.tensor([tokens])
    with torch.no_grad():
        output = model(input_ids=input_ids, labels=input_ids)
        logprobs = token_logprobs(model, input_ids, None, input_ids)
    assert output.loss.item() == pytest.approx(float(sum(per_step)) / 3, abs=1e-6)
    # tether's per-token log-probs: column t scores token t+1, the last column is 0; they sum to −Σ J(t).
    torch.testing.assert_close(logprobs[0, :3].double(), -torch.stack(per_step), atol=1e-6, rtol=0)
    assert logprobs[0, 3] == 0
    # A label of −100 takes its step out of the mean.
    labels = input_ids.clone()
    labels[0, 2] = -100
    with torch.no_grad():
        masked = model(input_ids=input_ids, labels=labels).loss
    assert masked.item() == pytest.approx(float(per_step[0] + per_step[2]) / 2, abs=1e-6)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_padding_and_packing_read_each_sequence_on_its_own(cell):
    model = tiny_rnn(cell, vocab_size=13, hidden_size=5, num_layers=2)
    a, b = [3, 7, 1, 12, 5], [9, 2, 4]
    with torch.no_grad():
        alone = [model(input_ids=torch.tensor([s])).logits[0] for s in (a, b)]
        left = model(
            input_ids=torch.tensor([a, [0, 0, *b]]), attention_mask=torch.tensor([[1] * 5, [0, 0, 1, 1, 1]])
        )
        right = model(
            input_ids=torch.tensor([a, [*b, 0, 0]]), attention_mask=torch.tensor([[1] * 5, [1, 1, 1, 0, 0]])
        )
        packed = model(input_ids=torch.tensor([a + b]), position_ids=torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2]]))
    for batch in (left.logits, right.logits):
        torch.testing.assert_close(batch[0], alone[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(left.logits[1, 2:], alone[1], atol=1e-6, rtol=0)
    torch.testing.assert_close(right.logits[1, :3], alone[1], atol=1e-6, rtol=0)
    torch.testing.assert_close(packed.logits[0, :5], alone[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(packed.logits[0, 5:], alone[1], atol=1e-6, rtol=0)
    assert not shares_prefixes(model)  # no attention: tether packs its sequences by position ids instead
    with pytest.raises(ValueError, match="2-D attention mask"):
        model(input_ids=torch.tensor([a]), attention_mask=torch.ones(1, 1, 5, 5, dtype=torch.bool))


def test_save_load_round_trip_gives_identical_logprobs(tmp_path, tokenizer):
    model = build_rnn_model(tokenizer, hidden_size=24, num_layers=2, cell="lstm", seed=3).eval()
    save_model(model, tokenizer, tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)  # plain transformers, no trust_remote_code
    assert type(reloaded) is TetherRNNForCausalLM and reloaded.config.model_type == "tether_rnn"
    assert reloaded.lm_head.weight is reloaded.model.embed_tokens.weight  # still tied
    encoded = tokenizer(
        ["review of the lid: great.", "the screen is poor. i would call it bad."],
        padding=True,
        return_tensors="pt",
    )
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    labels = ids.masked_fill(mask == 0, -100)
    with torch.no_grad():
        before = token_logprobs(model, ids, mask, labels)
        for loaded in (reloaded, load_causal_lm(str(tmp_path))):
            assert torch.equal(token_logprobs(loaded.eval(), ids, mask, labels), before)
    assert before.abs().sum() > 0
    with pytest.raises(TetherError, match="no scalar-head"):  # a causal LM only: refused cleanly
        reward_model_from_lm(str(tmp_path))


def test_repeated_sampling_carries_the_state(tokenizer):
    model = tiny_rnn("lstm", vocab_size=23, hidden_size=8, num_layers=2)
    prompts = torch.tensor([[0, 0, 5, 6, 7], [8, 9, 10, 11, 12], [0, 14, 15, 16, 17]])
    mask = (prompts != 0).long()
    assert supports(model)
    # Greedy: the same tokens as transformers' generate, which re-reads the whole sequence at every step.
    with torch.no_grad():
        reference = model.generate(
            input_ids=prompts,
            attention_mask=mask,
            max_new_tokens=6,
            do_sample=False,
            eos_token_id=[],
            pad_token_id=0,
        )[:, 5:]
    greedy = sample_tokens(model, prompts, mask, 6, stop_ids=[], pad_token_id=0, do_sample=False)
    assert torch.equal(greedy, reference)
    # Sampling gives the requested number of tokens, and its first draw follows ŷ = softmax(logits).
    torch.manual_seed(0)
    rows = prompts[1:2].expand(4000, -1)
    drawn = sample_tokens(model, rows, mask[1:2].expand(4000, -1), 9, stop_ids=[], pad_token_id=0)
    assert drawn.shape == (4000, 9)
    with torch.no_grad():
        expected = torch.softmax(model(input_ids=prompts[1:2]).logits[0, -1], dim=-1)
    observed = torch.bincount(drawn[:, 0], minlength=23) / 4000
    assert 0.5 * (observed - expected).abs().sum() < 0.04  # total variation
    # A stop token ends a row: it is kept, the rest is padding.
    stop = int(greedy[0, 2])
    stopped = sample_tokens(model, prompts, mask, 6, stop_ids=[stop], pad_token_id=0, do_sample=False)
    assert stopped[0, :3].tolist() == greedy[0, :3].tolist() and (stopped[0, 3:] == 0).all()


def test_generate_continues_plain_text_with_the_rnn(tokenizer):
    model = build_rnn_model(tokenizer, hidden_size=16, seed=1)
    torch.manual_seed(0)
    result = generate(
        model, tokenizer, ["review of the", "the lid"], max_new_tokens=5, do_sample=True, chat=False
    )
    assert len(result.completions) == 2 and all(1 <= len(ids) <= 5 for ids in result.response_ids)
