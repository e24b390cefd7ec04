"""Read records from JSONL, JSON (a top-level list), Parquet, or a ``datasets`` folder saved to disk.

Every record keeps where it came from (file and line, or row), so validation errors can say
``data.jsonl:12: field 'messages[1].role': …``. Text files are UTF-8, with or without the byte-order mark
some Windows editors write; bytes that are not UTF-8 are an error naming their line.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tether import TetherError


class DataError(TetherError):
    """A malformed dataset file or record; the message names file, line and field."""


@dataclass(frozen=True)
class Record:
    """One example and where it came from."""

    data: dict[str, Any]
    source: str
    line: int  # 1-based line (JSONL, JSON) or row (Parquet, datasets folder)

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"

    def error(self, field: str, message: str) -> DataError:
        return DataError(f"{self.where}: field '{field}': {message}")


def read_records(path: str | Path) -> list[Record]:
    """All records of a dataset file or folder; the format is chosen by extension (folder: ``datasets``)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    suffix = path.suffix.lower()
    if path.is_dir():
        records = _read_datasets_folder(path)
    elif suffix in {".jsonl", ".ndjson"}:
        records = _read_jsonl(path)
    elif suffix == ".json":
        records = _read_json(path)
    elif suffix == ".parquet":
        records = _read_parquet(path)
    else:
        raise DataError(
            f"{path}: unknown data format '{suffix}'; use .jsonl, .json, .parquet or a datasets folder"
        )
    if not records:
        raise DataError(f"{path}: holds no records")
    return records


def _decode(raw: bytes, path: Path, first_line: int = 1) -> str:
    """UTF-8 text of ``raw`` (a leading byte-order mark dropped); a one-line error naming the line of the
    first byte that is not UTF-8, counted from ``first_line``."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = first_line + raw.count(b"\n", 0, err.start)
        raise DataError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[err.start]:02x})") from None


def _as_record(obj: Any, source: str, line: int) -> Record:
    if not isinstance(obj, dict):
        raise DataError(f"{source}:{line}: expected a JSON object, got {type(obj).__name__}")
    return Record(obj, source, line)


def _read_jsonl(path: Path) -> list[Record]:
    records = []
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = _decode(raw, path, number)
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{number}: invalid JSON: {err.msg} (column {err.colno})") from None
            records.append(_as_record(obj, str(path), number))
    return records


def _read_json(path: Path) -> list[Record]:
    """A top-level JSON list; each element's line is found by decoding the list item by item."""
    text = _decode(path.read_bytes(), path)
    decoder = json.JSONDecoder()

    def line_of(index: int) -> int:
        return text.count("\n", 0, index) + 1

    def skip(index: int) -> int:
        while index < len(text) and text[index] in " \t\r\n":
            index += 1
        return index

    position = skip(0)
    if position >= len(text) or text[position] != "[":
        raise DataError(f"{path}:{line_of(position)}: expected a JSON list of records")
    position = skip(position + 1)
    records: list[Record] = []
    while position < len(text) and text[position] != "]":
        try:
            obj, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{err.lineno}: invalid JSON: {err.msg} (column {err.colno})") from None
        records.append(_as_record(obj, str(path), line_of(position)))
        position = skip(end)
        if position < len(text) and text[position] == ",":
            position = skip(position + 1)
        elif position < len(text) and text[position] != "]":
            raise DataError(f"{path}:{line_of(position)}: invalid JSON: expected ',' or ']'")
    if position >= len(text):
        raise DataError(f"{path}:{line_of(len(text))}: invalid JSON: the list is not closed")
    return records


def _read_parquet(path: Path) -> list[Record]:
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as err:  # pyarrow raises several types for a bad file
        raise DataError(f"{path}: cannot read Parquet: {err}") from None
    return [_as_record(row, str(path), number) for number, row in enumerate(rows, start=1)]


def _read_datasets_folder(path: Path) -> list[Record]:
    import datasets

    try:
        dataset = datasets.load_from_disk(str(path))
    except Exception as err:  # datasets raises FileNotFoundError and others
        raise DataError(f"{path}: not a dataset saved with save_to_disk: {err}") from None
    if isinstance(dataset, datasets.DatasetDict):
        if "train" not in dataset:
            raise DataError(f"{path}: a DatasetDict without a 'train' split (has {', '.join(dataset)})")
        dataset = dataset["train"]
    return [_as_record(row, str(path), number) for number, row in enumerate(dataset, start=1)]


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> Path:
    """Write rows as JSONL atomically: a temporary file beside the target, then a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            for row in rows:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path
