from tether.algorithms.kto import tokenize_unpaired, unpaired_examples
from tether.data import Record


def test_rankings_become_best_up_worst_down():
    records = [
        Record({"prompt": "p", "completions": ["a", "b", "c"], "ranks": [2, 1, 3]}, "r.jsonl", 1),
        Record(
            {"prompt": "q", "completions": ["x", "y"], "ranks": [1, 1]}, "r.jsonl", 2
        ),  # all tied: nothing
        Record({"prompt": "s", "completion": "z", "label": False}, "r.jsonl", 3),
    ]
    examples = unpaired_examples(records)
    assert [(e.prompt, e.completion, e.label) for e in examples] == [
        ("p", "b", True),
        ("p", "c", False),
        ("s", "z", False),
    ]


def test_mismatched_pairs_never_pair_an_example_with_itself(tokenizer):
    records = [
        Record({"prompt": f"review the {w}.", "completion": f"the {w} is fine.", "label": i % 2 == 0}, "u", i)
        for i, w in enumerate(["phone", "lid", "motor", "plot", "fit"])
    ]
    items = tokenize_unpaired(tokenizer, unpaired_examples(records), 128, seed=0)
    assert len(items) == 5
    own_completions = {tuple(item.example.input_ids[-8:]) for item in items}
    for item in items:
        assert item.mismatched.input_ids != item.example.input_ids
        assert tuple(item.mismatched.input_ids[-8:]) in own_completions  # someone else's completion
