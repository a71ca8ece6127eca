"""When a request ends: an EOS token, a stop string, or exactly max_new_tokens.

Checked token by token as a step commits several tokens at once, so the output is cut at
the same place as a one-token-at-a-time decoder would stop.
"""


class StopCriteria:
    def __init__(self, prompt_len: int, max_new_tokens: int, eos_token_ids: set[int], stop_strings=(), tokenizer=None):
        self.prompt_len = prompt_len
        self.max_new_tokens = max_new_tokens
        self.eos_token_ids = eos_token_ids
        self.stop_strings = tuple(stop_strings)
        self.tokenizer = tokenizer
        # every token decodes to at least one character, so this window always holds a stop string
        self.window = max((len(s) for s in self.stop_strings), default=0) + 2

    def extend(self, tokens: list[int], incoming: list[int]) -> str | None:
        """Append `incoming` to the sequence `tokens` (prompt + output) until a token ends the
        request. Returns why it ended ("eos", "stop_string", "length"), or None to go on."""
        for token in incoming:
            tokens.append(token)
            if token in self.eos_token_ids:
                return "eos"
            if self.stop_strings and self._ends_with_stop_string(tokens):
                return "stop_string"
            if len(tokens) - self.prompt_len >= self.max_new_tokens:
                return "length"
        return None

    def _ends_with_stop_string(self, tokens: list[int]) -> bool:
        tail = self.tokenizer.decode(tokens[max(self.prompt_len, len(tokens) - self.window) :])
        return any(s in tail for s in self.stop_strings)
