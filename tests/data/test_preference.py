import pytest

from tether.data import DataError, Record
from tether.data.preference import as_messages, parse_preference, parse_unpaired, rankings_to_pairs


def rec(data):
    return Record(data, "prefs.jsonl", 3)


def test_lecture_rankings_example():
    # Completions c1, c2, c3 with ranks 2, 1, 3 (rank 1 best): exactly c2≻c1, c2≻c3, c1≻c3.
    pairs = rankings_to_pairs("x", ["c1", "c2", "c3"], [2, 1, 3])
    assert [(p.chosen, p.rejected) for p in pairs] == [("c2", "c1"), ("c2", "c3"), ("c1", "c3")]
    assert [p.weight for p in pairs] == [pytest.approx(1 / 3)] * 3  # the prompt counts once in total


def test_rankings_skip_ties_and_merge_duplicates():
    # K = 4 with a tie between b and c: 6 − 1 = 5 pairs.
    pairs = parse_preference(rec({"prompt": "x", "completions": ["a", "b", "c", "d"], "ranks": [1, 2, 2, 4]}))
    assert {(p.chosen, p.rejected) for p in pairs} == {
        ("a", "b"),
        ("a", "c"),
        ("a", "d"),
        ("b", "d"),
        ("c", "d"),
    }
    # The same text twice keeps its best rank and yields no pair against itself.
    pairs = parse_preference(rec({"prompt": "x", "completions": ["a", "b", "a"], "ranks": [3, 2, 1]}))
    assert [(p.chosen, p.rejected) for p in pairs] == [("a", "b")]
    assert parse_preference(rec({"prompt": "x", "completions": ["a", "b"], "ranks": [1, 1]})) == []


def test_pairwise_explicit_and_implicit_prompt():
    pair = parse_preference(rec({"prompt": "p", "chosen": "good", "rejected": "bad", "margin": 2}))[0]
    assert (pair.prompt, pair.chosen, pair.rejected, pair.margin, pair.weight) == (
        "p",
        "good",
        "bad",
        2.0,
        1.0,
    )
    user = {"role": "user", "content": "p"}
    good, bad = {"role": "assistant", "content": "good"}, {"role": "assistant", "content": "bad"}
    pair = parse_preference(rec({"chosen": [user, good], "rejected": [user, bad]}))[0]
    assert (pair.prompt, pair.chosen, pair.rejected) == ([user], [good], [bad])
    assert as_messages("p", "good") == [user, good]


def test_unpaired_thumbs():
    example = parse_unpaired(rec({"prompt": "p", "completion": "c", "label": False}))
    assert example.label is False
    with pytest.raises(DataError, match=r"prefs\.jsonl:3: field 'label': expected true or false"):
        parse_unpaired(rec({"prompt": "p", "completion": "c", "label": "yes"}))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"prompt": "p", "chosen": "a"}, "field 'rejected': missing"),
        (
            {"prompt": "p", "chosen": "a", "rejected": 3},
            "field 'rejected': expected a string or a list of messages",
        ),
        ({"prompt": "p", "chosen": "a", "rejected": "a"}, "field 'rejected': identical to chosen"),
        (
            {"prompt": "p", "chosen": "a", "rejected": "b", "margin": "big"},
            "field 'margin': expected a number",
        ),
        ({"chosen": "a", "rejected": "b"}, "field 'prompt': missing; an implicit prompt needs"),
        (
            {"prompt": "p", "completions": ["a"], "ranks": [1]},
            "field 'completions': expected a list of at least 2",
        ),
        (
            {"prompt": "p", "completions": ["a", "b"], "ranks": [1]},
            "field 'ranks': expected a list of 2 ranks",
        ),
        (
            {"prompt": "p", "completions": ["a", "b"], "ranks": [1, "x"]},
            r"field 'ranks\[1\]': expected a number",
        ),
    ],
)
def test_malformed_preferences(data, message):
    with pytest.raises(DataError, match="prefs.jsonl:3: " + message) as info:
        parse_preference(rec(data))
    assert "\n" not in str(info.value)
