"""Sampling in a batch keeps every row's output law the target's: the draft strategy's rows are
drafted together and verified in one pass, each with its own generator and its own draft
probabilities. The chi-square test is the end-to-end one of test_sampling_power.py (same
target, draft, prompt and exact law), with 4 rows decoded at once; its power is shown by a
wrong batched rule that verifies every row against row 0's draft probabilities."""

import pytest
import torch
from goodness_of_fit import p_value
from test_sampling_power import CONFIG, GAMMA, PROMPT, exact_law, target_and_draft

from specdec import Decoder
from specdec.metrics import acceptance_rate
from specdec.strategies.base import Proposal
from specdec.strategies.draft import DraftModel

SAMPLES = 1000
ROWS = 4


class Row0Probs(DraftModel):
    """Bug: every row's drafts are verified with row 0's draft probabilities (where row 0 drafted
    fewer tokens, the row's own for the rest)."""

    def propose_rows(self, requests, max_tokens):
        proposals = super().propose_rows(requests, max_tokens)
        first = proposals[0].probs
        if first is None:
            return proposals
        wrong = []
        for p in proposals:
            if p.probs is not None:
                shared = min(len(first), len(p.probs))
                p = Proposal(p.tokens, torch.cat([first[:shared], p.probs[shared:]]))
            wrong.append(p)
        return wrong


@pytest.mark.parametrize("arch", ["llama", "gpt_neox"])
@pytest.mark.parametrize("strategy", [DraftModel, Row0Probs], ids=["specdec", "row0_probs"])
def test_batched_rows_keep_the_target_law(arch, strategy):
    target, draft = target_and_draft(arch)
    decoder = Decoder(target, strategy(draft, gamma=GAMMA), eos_token_ids=set())
    outs = decoder.generate_batch([PROMPT] * SAMPLES, CONFIG, batch_size=ROWS, seeds=list(range(1, SAMPLES + 1)))
    counts = {}
    for out in outs:
        counts[tuple(out.token_ids)] = counts.get(tuple(out.token_ids), 0) + 1
    p = p_value(counts, exact_law(arch))
    if strategy is DraftModel:
        rate = acceptance_rate([step for out in outs for step in out.metrics.steps])
        assert p > 1e-3 and 0.3 < rate < 0.7, (p, rate)
    else:
        assert p < 1e-6, p
