"""The dataset formats TRL users already have, validated with errors that name file, line and field.

- language modelling: ``{"text": str}``
- prompt–completion: ``{"prompt": str, "completion": str}``
- conversational: ``{"messages": [{"role", "content"}, …]}``, or ``{"prompt": [messages], "completion":
  [messages]}``

Everything becomes an :class:`SFTExample`: either plain text segments, or a message list with a flag per
message saying whether its tokens carry loss (assistant turns of the completion; all assistant turns of a
``messages`` conversation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tether.data.readers import DataError, Record

ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class SFTExample:
    """One instruction-tuning example in canonical form.

    Exactly one of ``segments`` (plain text) or ``messages`` (a conversation) is set.
    """

    where: str
    segments: tuple[tuple[str, bool], ...] | None = None  # (text, carries loss)
    messages: tuple[dict[str, str], ...] | None = None
    trained: tuple[bool, ...] | None = None  # per message: do its tokens carry loss?


def _check_messages(record: Record, field: str, value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise record.error(field, f"expected a non-empty list of messages, got {_describe(value)}")
    messages = []
    for index, message in enumerate(value):
        name = f"{field}[{index}]"
        if not isinstance(message, dict):
            raise record.error(name, f"expected a message object, got {_describe(message)}")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise record.error(f"{name}.role", f"expected one of {', '.join(ROLES)}, got {role!r}")
        if not isinstance(content, str):
            raise record.error(f"{name}.content", f"expected a string, got {_describe(content)}")
        messages.append({"role": role, "content": content})
    return messages


def _check_string(record: Record, field: str) -> str:
    value = record.data.get(field)
    if not isinstance(value, str):
        raise record.error(field, f"expected a string, got {_describe(value)}")
    return value


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (missing or null)"
    return f"{type(value).__name__} {value!r}"[:80]


def parse_text(record: Record, field: str = "text") -> str:
    """The text of a language-modelling record."""
    if field not in record.data:
        raise record.error(field, f"missing (the record has {_keys(record)})")
    text = _check_string(record, field)
    if not text.strip():
        raise record.error(field, "empty text")
    return text


def _keys(record: Record) -> str:
    return ", ".join(sorted(record.data)) or "no fields"


def parse_sft(record: Record) -> SFTExample:
    """An SFT example from any of the supported formats (see the module docstring)."""
    data = record.data
    if "messages" in data:
        messages = _check_messages(record, "messages", data["messages"])
        trained = tuple(m["role"] == "assistant" for m in messages)
        if not any(trained):
            raise record.error("messages", "no assistant message to learn from")
        return SFTExample(record.where, messages=tuple(messages), trained=trained)
    if "prompt" in data and "completion" in data:
        prompt, completion = data["prompt"], data["completion"]
        if isinstance(prompt, list) or isinstance(completion, list):
            prompt_messages = _check_messages(record, "prompt", prompt)
            completion_messages = _check_messages(record, "completion", completion)
            if not any(m["role"] == "assistant" for m in completion_messages):
                raise record.error("completion", "no assistant message to learn from")
            trained = (False,) * len(prompt_messages) + tuple(
                m["role"] == "assistant" for m in completion_messages
            )
            return SFTExample(
                record.where, messages=tuple(prompt_messages + completion_messages), trained=trained
            )
        prompt_text = _check_string(record, "prompt")
        completion_text = _check_string(record, "completion")
        if not completion_text:
            raise record.error("completion", "empty completion")
        return SFTExample(record.where, segments=((prompt_text, False), (completion_text, True)))
    if "text" in data:
        return SFTExample(record.where, segments=((parse_text(record), True),))
    raise DataError(
        f"{record.where}: no known format: expected 'messages', 'prompt' and 'completion', or 'text' "
        f"(the record has {_keys(record)})"
    )
