"""A recurrent language model — the middle rung of the lectures' ladder from n-grams to Transformers.

    e(t) = E x(t)                       the token's embedding
    h(t) = RNN(h(t−1), e(t))            an LSTM or GRU (one or more layers), h(0) = 0
    ŷ(t) = softmax(U h(t))              the distribution of the next token, at every step t

U is tied to E by default (``tie_word_embeddings``). Training minimises the mean over steps of
−log ŷ(t)[x(t+1)]; generation is repeated sampling: the sampled token is the next step's input
(``rollout/recurrent.py`` carries the state from step to step).

It is an ordinary ``transformers`` model (``model_type`` ``tether_rnn``) registered with ``AutoConfig`` and
``AutoModelForCausalLM`` when this module is imported (``tether.models`` imports it), so a saved folder
loads with plain ``AutoModelForCausalLM.from_pretrained`` — no ``trust_remote_code``. Its forward takes what
tether gives a Transformer: a 2-D attention mask (0 = padding, skipped: the state passes through it
unchanged, so left and right padding both work) and ``position_ids`` that restart at 0 where packed rows
start a new sequence (the state restarts from 0 there). It has no attention, so it takes no 4-D masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    GenerationMixin,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers import __version__ as transformers_version
from transformers.modeling_outputs import BaseModelOutput, CausalLMOutput

from tether.ops.logprobs import IGNORE_INDEX

MODEL_TYPE = "tether_rnn"
TRANSFORMERS_5 = int(transformers_version.split(".")[0]) >= 5
CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}

# A recurrent state: (h,) for a GRU, (h, c) for an LSTM; each (num_layers, N, hidden_size).
State = tuple[torch.Tensor, ...]


class TetherRNNConfig(PretrainedConfig):
    """Vocabulary, width (embedding and state size alike), depth and cell of a recurrent LM."""

    model_type = MODEL_TYPE

    def __init__(
        self,
        vocab_size: int = 512,
        hidden_size: int = 512,
        num_hidden_layers: int = 1,
        cell: str = "lstm",
        embedding_init_std: float = 1.0,
        tie_word_embeddings: bool = True,
        **kwargs: Any,
    ) -> None:
        if cell not in CELLS:
            raise ValueError(f"unknown RNN cell {cell!r}; choose one of {', '.join(CELLS)}")
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.cell = cell
        self.embedding_init_std = embedding_init_std
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)


@dataclass
class RNNOutput(BaseModelOutput):
    """The backbone's output: ``last_hidden_state`` (B, T, H) and, per sequence, the final ``state``."""

    state: State | None = None


def sequences(
    keep: torch.Tensor, position_ids: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The sequences of a (B, T) batch, each as the (row, column) of its tokens in order: the kept tokens
    (``keep``) of a row, split where ``position_ids`` restart (a token whose position is not above the
    previous kept token's starts a new sequence). Returns rows and columns (S, L), padded by repeating a
    sequence's last token, and lengths (S,); sequences come row by row, left to right."""
    positions = None if position_ids is None else position_ids.expand(keep.shape).tolist()
    found: list[tuple[int, list[int]]] = []
    for row, kept in enumerate(keep.tolist()):
        columns = [column for column, k in enumerate(kept) if k]
        if not columns:
            continue
        start = 0
        if positions is not None:
            for index, (before, column) in enumerate(pairwise(columns), start=1):
                if positions[row][column] <= positions[row][before]:
                    found.append((row, columns[start:index]))
                    start = index
        found.append((row, columns[start:]))
    if not found:
        raise ValueError("the batch holds no tokens (every attention-mask entry is 0)")
    longest = max(len(columns) for _, columns in found)
    rows = torch.tensor([[row] * longest for row, _ in found], device=keep.device)
    columns = torch.tensor(
        [c + [c[-1]] * (longest - len(c)) for _, c in found], dtype=torch.long, device=keep.device
    )
    lengths = torch.tensor([len(c) for _, c in found], dtype=torch.long)
    return rows, columns, lengths


class TetherRNNPreTrainedModel(PreTrainedModel):
    config: TetherRNNConfig
    config_class = TetherRNNConfig
    base_model_prefix = "model"
    is_recurrent = True  # no attention: tether never hands it 4-D masks (models.forward.shares_prefixes)

    def _init_weights(self, module: nn.Module) -> None:
        """Embeddings ~ N(0, embedding_init_std²); the cell's weights and biases ~ U(±1/√H) (PyTorch's own
        default for LSTM/GRU); an untied output layer ~ N(0, 1/H)."""
        hidden = self.config.hidden_size
        if isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=self.config.embedding_init_std)
        elif isinstance(module, (nn.LSTM, nn.GRU)):
            for parameter in module.parameters():
                nn.init.uniform_(parameter, -(hidden**-0.5), hidden**-0.5)
        elif isinstance(module, nn.Linear) and not self.config.tie_word_embeddings:
            nn.init.normal_(module.weight, std=hidden**-0.5)


class TetherRNNModel(TetherRNNPreTrainedModel):
    """Embedding and recurrent layers: token ids → the hidden state after each token."""

    def __init__(self, config: TetherRNNConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.rnn = CELLS[config.cell](
            config.hidden_size, config.hidden_size, config.num_hidden_layers, batch_first=True
        )
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def _run(self, inputs: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        out, final = self.rnn(inputs, None if state is None else state if len(state) > 1 else state[0])
        return out, final if isinstance(final, tuple) else (final,)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        state: State | None = None,
        **kwargs: Any,
    ) -> RNNOutput:
        """Hidden states (B, T, H) of every position; ``state``: the final state of each sequence (of each
        row when a row is one sequence). ``state`` in: where to start (rows that are one sequence only).

        Padding (``attention_mask`` 0) is skipped: the state passes over it unchanged and its own outputs
        are 0. Where ``position_ids`` restart, a new sequence starts from the zero state."""
        if attention_mask is not None and attention_mask.dim() != 2:
            raise ValueError(
                "a recurrent LM takes a 2-D attention mask (1 = token, 0 = padding), not a 4-D one"
            )
        embeds = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        keep = None if attention_mask is None else attention_mask.bool()
        one_sequence_per_row = position_ids is None or bool(
            (position_ids[..., 1:] > position_ids[..., :-1]).all()
        )
        if one_sequence_per_row and (keep is None or bool(keep.all())):
            hidden, final = self._run(embeds, state)
            return RNNOutput(last_hidden_state=hidden, state=final)
        if state is not None:
            raise ValueError("an initial state needs rows without padding, each one sequence")
        if keep is None:
            keep = torch.ones(embeds.shape[:2], dtype=torch.bool, device=embeds.device)
        rows, columns, lengths = sequences(keep, position_ids)
        packed = pack_padded_sequence(embeds[rows, columns], lengths, batch_first=True, enforce_sorted=False)
        out, final = self.rnn(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=rows.shape[1])  # (S, L, H)
        valid = torch.arange(rows.shape[1], device=rows.device) < lengths.to(rows.device)[:, None]
        hidden = embeds.new_zeros(*embeds.shape[:2], out.shape[-1])
        hidden = hidden.index_put((rows[valid], columns[valid]), out[valid])
        return RNNOutput(last_hidden_state=hidden, state=final if isinstance(final, tuple) else (final,))

    def step(self, input_ids: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        """One step for each of N sequences: token ids (N,) and their states → hidden states (N, H) and the
        new states."""
        out, final = self._run(self.embed_tokens(input_ids[:, None]), state)
        return out[:, 0], final


class TetherRNNForCausalLM(TetherRNNPreTrainedModel, GenerationMixin):
    """The recurrent LM with its output layer: logits at position t score the token at t+1."""

    # The output layer is the embedding (when tied): a mapping in transformers 5, a list of names before.
    _tied_weights_keys = (
        {"lm_head.weight": "model.embed_tokens.weight"} if TRANSFORMERS_5 else ["lm_head.weight"]
    )

    def __init__(self, config: TetherRNNConfig) -> None:
        super().__init__(config)
        self.model = TetherRNNModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def get_decoder(self) -> TetherRNNModel:
        return self.model

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # the state is not a key/value cache; ``generate`` re-reads the whole sequence

    def prepare_inputs_for_generation(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """``generate`` runs the whole sequence at every step (tether samples step by step instead, carrying
        the state: ``rollout/recurrent.py``)."""
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> CausalLMOutput:
        """``logits`` (B, T, V): column t is the distribution of token t+1. With ``labels`` (aligned with
        ``input_ids``, −100 = no loss), ``loss`` is the mean over labelled steps of −log ŷ(t)[label(t+1)]."""
        hidden = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
        ).last_hidden_state
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                labels[:, 1:].reshape(-1),
                ignore_index=IGNORE_INDEX,
            )
        return CausalLMOutput(loss=loss, logits=logits)


def is_rnn(model: Any) -> bool:
    """Whether ``model`` (or the model under a LoRA wrapper) is a :class:`TetherRNNForCausalLM`."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return isinstance(base, TetherRNNForCausalLM)


def build_rnn_model(
    tokenizer: Any,
    hidden_size: int = 512,
    num_layers: int = 1,
    cell: str = "lstm",
    seed: int = 0,
) -> TetherRNNForCausalLM:
    """A freshly initialised recurrent LM over ``tokenizer``'s vocabulary (tied embeddings), stopping at
    ``<|endoftext|>`` and ``<|im_end|>`` as the tiny Transformer does."""
    stop_ids = [tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_end|>")]
    config = TetherRNNConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        cell=cell,
        bos_token_id=None,
        eos_token_id=stop_ids,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = TetherRNNForCausalLM(config)
    model.generation_config.eos_token_id = stop_ids
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


AutoConfig.register(MODEL_TYPE, TetherRNNConfig, exist_ok=True)
AutoModelForCausalLM.register(TetherRNNConfig, TetherRNNForCausalLM, exist_ok=True)
