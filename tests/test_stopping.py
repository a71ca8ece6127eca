"""Stop strings and EOS end the output at the same token for every strategy."""

import random

from conftest import random_prompt, tiny

from specdec import Decoder, GenerationConfig
from specdec.strategies import create_strategy
from specdec.tiny import byte_tokenizer


def test_stop_string_cuts_at_the_completing_token():
    target, tokenizer = tiny("llama"), byte_tokenizer()
    rng = random.Random(1)
    hits = 0
    for _ in range(8):
        prompt = random_prompt(rng)
        free = Decoder(target, create_strategy("baseline"), tokenizer).generate(prompt, GenerationConfig(max_new_tokens=30))
        text = tokenizer.decode(free.token_ids)
        start = rng.randrange(0, max(1, len(text) - 3))
        stop = text[start : start + 3]
        config = GenerationConfig(max_new_tokens=30, stop_strings=[stop])
        outputs = [Decoder(target, create_strategy("baseline"), tokenizer).generate(prompt, config)]
        for draft in (target, tiny("llama", seed=1)):
            for gamma in (2, 5):
                strategy = create_strategy("draft", draft_model=draft, gamma=gamma)
                outputs.append(Decoder(target, strategy, tokenizer).generate(prompt, config))
        base = outputs[0]
        assert all(o.token_ids == base.token_ids and o.stop_reason == base.stop_reason for o in outputs)
        if base.stop_reason == "stop_string":
            hits += 1
            out_text = tokenizer.decode(base.token_ids)
            assert stop in out_text and stop not in tokenizer.decode(base.token_ids[:-1])
            assert free.token_ids[: len(base.token_ids)] == base.token_ids
    assert hits >= 5
