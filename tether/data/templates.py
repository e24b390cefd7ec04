"""Chat templating: the tokenizer's own template, or a default for tokenizers that have none.

Loss masks come from rendering prefixes of the conversation: the text of assistant turn i is what
``render(messages[:i+1])`` adds after ``render(messages[:i], add_generation_prompt=True)``. This needs a
template whose renderings of a conversation's prefixes are prefixes of each other, which holds for ChatML,
Llama, Mistral and most instruct templates; a template that breaks it is reported, not silently mis-masked.
"""

from __future__ import annotations

from typing import Any

from tether.data.readers import DataError

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# For tokenizers without ChatML tokens: plain text markers, and EOS closes each assistant turn.
PLAIN_TEMPLATE = (
    "{% for message in messages %}{{ '### ' + message['role'] | capitalize + ':\\n' + message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Assistant:\\n' }}{% endif %}"
)


def ensure_chat_template(tokenizer: Any) -> None:
    """Give a tokenizer without a chat template the default: ChatML when it knows ChatML's tokens, else plain."""
    if getattr(tokenizer, "chat_template", None):
        return
    vocab = tokenizer.get_vocab()
    tokenizer.chat_template = (
        CHATML_TEMPLATE if "<|im_start|>" in vocab and "<|im_end|>" in vocab else PLAIN_TEMPLATE
    )


def render(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
    """The conversation as text, by the tokenizer's chat template."""
    ensure_chat_template(tokenizer)
    return tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
    )


def render_prompt(tokenizer: Any, prompt: str | list[dict[str, str]]) -> str:
    """A prompt as the model should see it before generating: a user turn plus the generation prompt."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    return render(tokenizer, messages, add_generation_prompt=True)


def conversation_segments(
    tokenizer: Any, messages: list[dict[str, str]], trained: list[bool], where: str = "<conversation>"
) -> list[tuple[str, bool]]:
    """Split the rendered conversation into (text, carries loss) pieces; trained turns carry loss."""
    full = render(tokenizer, messages)
    segments: list[tuple[str, bool]] = []
    cursor = 0
    for index, (message, is_trained) in enumerate(zip(messages, trained)):
        if not is_trained:
            continue
        if message["role"] != "assistant":
            raise DataError(
                f"{where}: only assistant turns can carry loss (message {index} is {message['role']})"
            )
        start_text = render(tokenizer, messages[:index], add_generation_prompt=True)
        end_text = render(tokenizer, messages[: index + 1])
        if not (full.startswith(start_text) and full.startswith(end_text) and len(start_text) >= cursor):
            raise DataError(
                f"{where}: the tokenizer's chat template does not render conversations prefix by prefix, "
                "so response tokens cannot be found; use prompt/completion text data instead"
            )
        if len(start_text) > cursor:
            segments.append((full[cursor : len(start_text)], False))
        segments.append((full[len(start_text) : len(end_text)], True))
        cursor = len(end_text)
    if cursor < len(full):
        segments.append((full[cursor:], False))
    return segments
