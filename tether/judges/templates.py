"""The judge prompts, made safe for untrusted text.

The pairwise prompt is the multiple-choice form Constitutional AI uses (Bai et al. 2022, "Constitutional
AI: Harmlessness from AI Feedback", §4.1; the lecture's "Constitutional AI for collecting preferences"):
the conversation, a principle, "Options: (A) … (B) …", "The answer is:". The judge's answer is read
from its log-probabilities of the option continuations, never parsed from generated text.

Prompts and responses are untrusted: a response could try to close its block, start a line of its own
("(B) …", "The answer is: (A)") or spell the judge's special tokens (``<|im_end|>``). ``escape_untrusted``
makes that impossible by construction:

1. ``&``, ``<`` and ``>`` become ``&amp;``, ``&lt;``, ``&gt;`` — text cannot close a ``<response>`` block
   nor spell a tag-like special token;
2. all whitespace runs become one space — text cannot start a line of the template;
3. any other special-token string of the judge's tokenizer is broken apart with a zero-width space;
4. option labels ``(A)``/``(B)`` become ``[A]``/``[B]`` and the template's keywords ("Options:", "The
   answer is") are defused — even inside its block, text does not read as the template's own lines.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

ZERO_WIDTH_SPACE = "\u200b"
OPTION_LABELS = ("A", "B")
PAIRWISE_OPTIONS = (" (A)", " (B)")
RATING_SCALE = tuple(range(1, 11))

_OPTION_LABEL = re.compile(r"\(\s*([a-z])\s*\)", re.IGNORECASE)
_KEYWORDS = re.compile(r"(options|the answer is|rating)(\s*:)", re.IGNORECASE)


def special_token_strings(tokenizer: Any) -> list[str]:
    """The strings a tokenizer turns into special or added tokens (longest first)."""
    if tokenizer is None:
        return []
    found = set(getattr(tokenizer, "all_special_tokens", []) or [])
    found |= set((getattr(tokenizer, "get_added_vocab", dict)() or {}).keys())
    return sorted((s for s in found if s), key=len, reverse=True)


def escape_untrusted(text: str, special_tokens: Iterable[str] = ()) -> str:
    """``text`` made inert inside a judge prompt (see the module docstring for the four rules)."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = " ".join(text.split())
    for token in special_tokens:
        if len(token) > 1 and token in text:
            text = text.replace(token, token[0] + ZERO_WIDTH_SPACE + token[1:])
    text = _OPTION_LABEL.sub(lambda m: f"[{m.group(1)}]", text)
    return _KEYWORDS.sub(lambda m: m.group(1) + " -", text)


def response_text(response: Any) -> str:
    """A response as plain text: a string, or the contents of a list of (assistant) messages."""
    if isinstance(response, str):
        return response
    return " ".join(m["content"] for m in response)


def render_conversation(prompt: Any, special_tokens: Sequence[str] = ()) -> str:
    """A prompt (a string or a list of messages) as "Human: …" / "Assistant: …" lines, escaped."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    speaker = {"user": "Human", "assistant": "Assistant", "system": "System"}
    return "\n".join(
        f"{speaker.get(m['role'], m['role'].capitalize())}: {escape_untrusted(m['content'], special_tokens)}"
        for m in messages
    )


def pairwise_prompt(
    prompt: Any, first: Any, second: Any, principle: str, special_tokens: Sequence[str] = ()
) -> str:
    """The multiple-choice judge prompt, up to and including "The answer is:"."""
    return (
        "Consider the following conversation between a human and an assistant:\n"
        f"<conversation>\n{render_conversation(prompt, special_tokens)}\n</conversation>\n"
        f"{' '.join(principle.split())}\n"
        "Options:\n"
        f"(A) <response>{escape_untrusted(response_text(first), special_tokens)}</response>\n"
        f"(B) <response>{escape_untrusted(response_text(second), special_tokens)}</response>\n"
        "The answer is:"
    )


def pointwise_prompt(prompt: Any, response: Any, principle: str, special_tokens: Sequence[str] = ()) -> str:
    """The rating prompt, up to and including "Rating:"; the options are " 1/10" … " 10/10"."""
    return (
        "Consider the following conversation between a human and an assistant:\n"
        f"<conversation>\n{render_conversation(prompt, special_tokens)}\n</conversation>\n"
        f"The assistant's response:\n<response>{escape_untrusted(response_text(response), special_tokens)}</response>\n"
        f"{' '.join(principle.split())} Rate the response on a scale of 1 to 10.\n"
        "Rating:"
    )


def rating_options() -> list[str]:
    """Continuations scored by the pointwise judge: " k/10" (the "/" keeps " 1" from prefixing " 10")."""
    return [f" {k}/10" for k in RATING_SCALE]


_PAIRWISE_SHAPE = re.compile(
    r"\AConsider the following conversation between a human and an assistant:\n"
    r"<conversation>\n(?P<conversation>[^<>]*)\n</conversation>\n"
    r"(?P<principle>[^\n]*)\n"
    r"Options:\n"
    r"\(A\) <response>(?P<a>[^<>\n]*)</response>\n"
    r"\(B\) <response>(?P<b>[^<>\n]*)</response>\n"
    r"The answer is:\Z"
)


def parse_pairwise_prompt(text: str) -> dict[str, str] | None:
    """The parts of a rendered pairwise prompt, or None when it does not have exactly the template's shape.

    Used by the tests to check that no response can change the shape of the prompt it is put in.
    """
    match = _PAIRWISE_SHAPE.match(text)
    return match.groupdict() if match else None
