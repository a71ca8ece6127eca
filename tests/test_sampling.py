"""Temperature, top-k and top-p processing against direct definitions."""

import torch

from specdec.sampling import SamplingParams, probabilities


def test_temperature_only_is_softmax():
    logits = torch.randn(3, 50)
    torch.testing.assert_close(probabilities(logits, SamplingParams(0.7)), (logits / 0.7).softmax(-1))


def test_top_k_keeps_k_largest():
    logits = torch.randn(50)
    p = probabilities(logits, SamplingParams(1.0, top_k=5))
    kept = set(torch.topk(logits, 5).indices.tolist())
    assert set(p.nonzero().flatten().tolist()) == kept
    torch.testing.assert_close(p.sum(), torch.tensor(1.0))


def test_top_p_keeps_smallest_set_reaching_p():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    p = probabilities(logits, SamplingParams(1.0, top_p=0.8))
    torch.testing.assert_close(p, torch.tensor([0.5, 0.3, 0.0, 0.0]) / 0.8)
    p = probabilities(logits, SamplingParams(1.0, top_p=0.81))
    torch.testing.assert_close(p, torch.tensor([0.5, 0.3, 0.15, 0.0]) / 0.95)
