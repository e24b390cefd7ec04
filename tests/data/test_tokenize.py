import copy

import pytest
import torch

from tether.data import Record
from tether.data.formats import parse_sft
from tether.data.templates import CHATML_TEMPLATE, PLAIN_TEMPLATE, conversation_segments, ensure_chat_template
from tether.data.tokenize import TokenizedExample, pack, pad_collate, tokenize_sft, tokenize_texts
from tether.ops.logprobs import IGNORE_INDEX

CHAT = {
    "messages": [
        {"role": "user", "content": "write a review of the phone."},
        {"role": "assistant", "content": "the phone is great."},
        {"role": "user", "content": "and the camera?"},
        {"role": "assistant", "content": "the camera is poor."},
    ]
}


def test_chat_labels_are_response_only_token_by_token(tokenizer):
    example = tokenize_sft(tokenizer, parse_sft(Record(CHAT, "chat.jsonl", 1)), max_length=512)
    pieces = [
        ("<|im_start|>user\nwrite a review of the phone.<|im_end|>\n<|im_start|>assistant\n", False),
        ("the phone is great.<|im_end|>\n", True),
        ("<|im_start|>user\nand the camera?<|im_end|>\n<|im_start|>assistant\n", False),
        ("the camera is poor.<|im_end|>\n", True),
    ]
    expected_ids, expected_labels = [], []
    for text, trained in pieces:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        expected_ids += ids
        expected_labels += ids if trained else [IGNORE_INDEX] * len(ids)
    assert example.input_ids == expected_ids
    assert example.labels == expected_labels
    # Token by token: what carries loss decodes to exactly the two assistant answers and their end-of-turn.
    trained_text = "".join(
        tokenizer.decode([t]) for t, label in zip(example.input_ids, example.labels) if label != IGNORE_INDEX
    )
    assert trained_text == "the phone is great.<|im_end|>\nthe camera is poor.<|im_end|>\n"
    for token, label in zip(example.input_ids, example.labels):
        assert label in (token, IGNORE_INDEX)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert [label == im_end for label in example.labels].count(True) == 2  # user turns' ends carry no loss


def test_prompt_completion_text_gets_eos(tokenizer):
    example = tokenize_sft(
        tokenizer, parse_sft(Record({"prompt": "q: ", "completion": "the lid"}, "f", 1)), 64
    )
    prompt_len = len(tokenizer("q: ", add_special_tokens=False)["input_ids"])
    assert example.labels[:prompt_len] == [IGNORE_INDEX] * prompt_len
    assert example.labels[prompt_len:] == example.input_ids[prompt_len:]
    assert example.input_ids[-1] == tokenizer.eos_token_id


def test_truncation_that_removes_the_response_drops_the_example(tokenizer):
    long_prompt = {"prompt": "the battery " * 50, "completion": "ok"}
    assert tokenize_sft(tokenizer, parse_sft(Record(long_prompt, "f", 1)), max_length=16) is None


def test_default_template_for_tokenizers_without_one(tokenizer):
    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None
    ensure_chat_template(plain)
    assert plain.chat_template == CHATML_TEMPLATE  # it knows the ChatML tokens
    bare = copy.deepcopy(tokenizer)
    bare.chat_template = None
    bare.get_vocab = lambda: {"a": 0}  # a vocabulary without ChatML tokens
    ensure_chat_template(bare)
    assert bare.chat_template == PLAIN_TEMPLATE
    segments = conversation_segments(bare, CHAT["messages"][:2], [False, True])
    assert segments == [
        ("### User:\nwrite a review of the phone.\n\n### Assistant:\n", False),
        ("the phone is great.<|endoftext|>\n\n", True),
    ]


def test_pack_cuts_a_stream_into_blocks(tokenizer):
    docs = tokenize_texts(tokenizer, ["the lid", "the motor is great"])
    assert all(d[-1] == tokenizer.eos_token_id for d in docs)
    stream = docs[0] + docs[1]
    blocks = pack(docs, 3)
    assert blocks == [stream[i : i + 3] for i in range(0, len(stream) - 2, 3)]
    assert all(len(b) == 3 for b in blocks)


@pytest.mark.parametrize("side", ["right", "left"])
def test_pad_collate(side):
    batch = pad_collate([TokenizedExample([1, 2, 3], [-100, 2, 3]), TokenizedExample([4], [4])], 0, side)
    if side == "right":
        assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 0, 0]]
        assert batch["labels"].tolist() == [[-100, 2, 3], [4, -100, -100]]
        assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    else:
        assert batch["input_ids"].tolist() == [[1, 2, 3], [0, 0, 4]]
        assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert batch["input_ids"].dtype == torch.long
