import json

import pytest

from tether.data import DataError, read_records, write_jsonl

ROWS = [{"prompt": "a", "completion": "b"}, {"prompt": "c", "completion": "d"}]


def test_jsonl_records_keep_their_lines(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n\n" + json.dumps(ROWS[1]) + "\n")
    records = read_records(path)
    assert [r.data for r in records] == ROWS
    assert [r.line for r in records] == [1, 3]  # the blank line is skipped but counted
    assert records[1].where == f"{path}:3"


def test_json_list_items_keep_their_lines(tmp_path):
    path = tmp_path / "data.json"
    path.write_text(
        '[\n  {"prompt": "a", "completion": "b"},\n\n  {"prompt": "c",\n   "completion": "d"}\n]\n'
    )
    records = read_records(path)
    assert [r.data for r in records] == ROWS
    assert [r.line for r in records] == [2, 4]


def test_parquet_and_datasets_folder(tmp_path):
    import datasets

    dataset = datasets.Dataset.from_list(ROWS)
    dataset.to_parquet(str(tmp_path / "data.parquet"))
    dataset.save_to_disk(str(tmp_path / "folder"))
    for path in (tmp_path / "data.parquet", tmp_path / "folder"):
        records = read_records(path)
        assert [r.data for r in records] == ROWS
        assert [r.line for r in records] == [1, 2]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.jsonl", '{"text": "ok"}\n{"text": \n', "bad.jsonl:2: invalid JSON"),
        ("list.jsonl", '{"text": "ok"}\n[1, 2]\n', "list.jsonl:2: expected a JSON object, got list"),
        ("bad.json", '[\n {"text": "a"},\n {"text": }\n]', "bad.json:3: invalid JSON"),
        ("open.json", '[\n {"text": "a"}', "open.json:2: invalid JSON: the list is not closed"),
        ("obj.json", '{"text": "a"}', "obj.json:1: expected a JSON list"),
        ("data.csv", "a,b\n", "unknown data format '.csv'"),
    ],
)
def test_malformed_files_name_file_and_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("(", r"\(")) as info:
        read_records(path)
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_records(tmp_path / "nope.jsonl")


def test_write_jsonl_round_trip(tmp_path):
    path = write_jsonl(tmp_path / "sub" / "out.jsonl", ROWS)
    assert [r.data for r in read_records(path)] == ROWS
    assert [p.name for p in path.parent.iterdir()] == ["out.jsonl"]  # no temporary file left behind


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        (
            "latin.jsonl",
            b'{"text": "ok"}\n{"text": "caf\xe9"}\n',
            "latin.jsonl:2: not UTF-8 text (byte 0xe9)",
        ),
        (
            "latin.json",
            b'[\n {"text": "a"},\n {"text": "\xff"}\n]',
            "latin.json:3: not UTF-8 text (byte 0xff)",
        ),
        ("empty.jsonl", b"", "empty.jsonl: holds no records"),
        ("blank.jsonl", b"\n\n", "blank.jsonl: holds no records"),
        ("empty.json", b"[]", "empty.json: holds no records"),
    ],
)
def test_bad_bytes_and_empty_files_name_the_file(tmp_path, name, raw, message):
    path = tmp_path / name
    path.write_bytes(raw)
    with pytest.raises(DataError) as info:
        read_records(path)
    assert str(info.value) == f"{path}{message[len(name) :]}"


def test_a_byte_order_mark_is_accepted(tmp_path):
    bom = b"\xef\xbb\xbf"
    (tmp_path / "a.jsonl").write_bytes(bom + b'{"text": "caf\xc3\xa9"}\n{"text": "b"}\n')
    (tmp_path / "a.json").write_bytes(bom + b'[{"text": "a"},\n{"text": "b"}]')
    assert [r.data["text"] for r in read_records(tmp_path / "a.jsonl")] == ["café", "b"]
    records = read_records(tmp_path / "a.json")
    assert [(r.data["text"], r.line) for r in records] == [("a", 1), ("b", 2)]
