"""Conversations as token ids: what the decoding loop and the trainers feed the target."""

from specdec.errors import ConfigError


def encode(tokenizer, messages: list[dict], chat_template: str | bool = "auto") -> list[int]:
    """Token ids of a conversation, through the chat template when the model has one (else
    the turns' texts joined by blank lines)."""
    use_template = tokenizer.chat_template is not None if chat_template == "auto" else bool(chat_template)
    if use_template:
        if tokenizer.chat_template is None:
            raise ConfigError("dataset.chat_template=true but the tokenizer has no chat template: use auto or false")
        return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False))
    return tokenizer.encode("\n\n".join(m["content"] for m in messages))
