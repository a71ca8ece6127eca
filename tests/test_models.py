"""Model loading helpers: the layer-skip self-draft and the offline alias cache."""

import pytest
import torch
from conftest import tiny

from specdec.drafts.draft_model import layer_skip_draft
from specdec.models import load_model


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt_neox"])
def test_layer_skip_draft_is_the_targets_first_layers(arch):
    target = tiny(arch)
    draft = layer_skip_draft(target, 2)
    ids = torch.randint(0, 256, (1, 12))
    with torch.no_grad():
        hidden = target(ids, output_hidden_states=True).hidden_states[2]
        final_norm = target.get_decoder().final_layer_norm if arch == "gpt_neox" else target.get_decoder().norm
        expected = target.get_output_embeddings()(final_norm(hidden))
        torch.testing.assert_close(draft(ids).logits, expected)
    shared = {p.data_ptr() for p in target.parameters()}
    assert all(p.data_ptr() in shared for p in draft.parameters())


def test_tiny_random_alias_loads_with_its_tokenizer():
    model, tokenizer = load_model("tiny-random", torch.device("cpu"), torch.float32)
    assert model.config.vocab_size == len(tokenizer)
    assert tokenizer.decode(tokenizer.encode("héllo")) == "héllo"
