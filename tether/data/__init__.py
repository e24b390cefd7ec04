"""Datasets: readers (JSONL, JSON, Parquet, ``datasets`` folders), TRL-compatible formats with
``file:line`` validation, chat templating, tokenisation with response-only labels, packing and collation."""

from tether.data.readers import DataError, Record, read_records, write_jsonl

__all__ = ["DataError", "Record", "read_records", "write_jsonl"]
