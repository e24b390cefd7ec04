import pytest

from tether.data import DataError, Record
from tether.data.formats import parse_sft, parse_text


def rec(data):
    return Record(data, "data.jsonl", 7)


def test_prompt_completion_strings():
    example = parse_sft(rec({"prompt": "hi", "completion": " there"}))
    assert example.segments == (("hi", False), (" there", True))


def test_messages_train_on_assistant_turns():
    messages = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "u2"},
        {"role": "assistant", "content": "a2"},
    ]
    example = parse_sft(rec({"messages": messages}))
    assert example.trained == (False, False, True, False, True)


def test_conversational_prompt_completion_trains_completion_only():
    example = parse_sft(
        rec(
            {
                "prompt": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "earlier"}],
                "completion": [{"role": "assistant", "content": "a"}],
            }
        )
    )
    assert example.trained == (False, False, True)


def test_text_record_trains_everything():
    assert parse_sft(rec({"text": "abc"})).segments == (("abc", True),)
    assert parse_text(rec({"text": "abc"})) == "abc"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"messages": [{"role": "bot", "content": "x"}]},
            "data.jsonl:7: field 'messages[0].role': expected one of",
        ),
        (
            {"messages": [{"role": "user", "content": 3}]},
            "data.jsonl:7: field 'messages[0].content': expected a string",
        ),
        (
            {"messages": [{"role": "user", "content": "x"}]},
            "data.jsonl:7: field 'messages': no assistant message",
        ),
        ({"messages": []}, "data.jsonl:7: field 'messages': expected a non-empty list"),
        ({"prompt": "x", "completion": None}, "data.jsonl:7: field 'completion': expected a string"),
        ({"prompt": "x", "completion": ""}, "data.jsonl:7: field 'completion': empty completion"),
        ({"question": "x"}, "data.jsonl:7: no known format"),
        ({"text": "  "}, "data.jsonl:7: field 'text': empty text"),
    ],
)
def test_malformed_records(data, message):
    with pytest.raises(DataError, match=message.replace("[", r"\[")):
        parse_sft(rec(data))
