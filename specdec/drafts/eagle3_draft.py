"""The EAGLE-3 draft (Li et al. 2025) as the `eagle` strategy runs it: the public checkpoints'
architecture (SafeAILab/EAGLE, eagle/model/cnets.py), built from transformers' Llama parts.

Three differences from EAGLE-1/2 (specdec.drafts.eagle_draft): the draft reads the inputs of
three target layers (low, middle, high: 2, L // 2 and L - 3), side by side, which `fc` maps to one
hidden state (its own predicted states, fed back while drafting, skip `fc`); its one layer
normalizes the token's embedding and that state separately and attends over both side by side
(q, k and v read 2d); and it scores a draft vocabulary of its own (its final norm and head),
whose row i is target token i + d2t[i].

So that the strategy's draft loop runs it unchanged, the layer takes [embedding; state] as one
(n, 2d) input, the decoder's last state is the layer's output before the norm (what is fed
back), and the head (norm, then SubsetHead) scores the target's whole vocabulary, -inf outside
the draft's.
"""

import copy

import torch
from torch import nn
from transformers import AutoModelForCausalLM
from transformers.models.llama.modeling_llama import LlamaAttention, LlamaMLP, LlamaRMSNorm

from specdec.drafts.draft_model import borrow_embeddings
from specdec.drafts.subset_head import SubsetHead
from specdec.errors import ConfigError


def feature_layers(num_layers: int) -> tuple[int, int, int]:
    """The target layers whose inputs EAGLE-3 reads, low to high (as the public code picks them)."""
    layers = tuple(sorted({2, num_layers // 2, num_layers - 3}))
    if len(layers) != 3 or layers[0] < 0:
        raise ConfigError(f"EAGLE-3 reads the inputs of target layers 2, L // 2 and L - 3, three different "
                          f"layers; this target has L = {num_layers}: use an EAGLE-1/2 draft for it")
    return layers


class Eagle3Layer(nn.Module):
    """The draft's one layer: its input is [token embedding; hidden state] (n, 2d), its output the
    next hidden state (n, d), residual on the state."""

    def __init__(self, config):
        super().__init__()
        size = config.hidden_size
        wide = copy.deepcopy(config)
        wide.hidden_size, wide.head_dim = 2 * size, getattr(config, "head_dim", None) or size // config.num_attention_heads
        self.self_attn = LlamaAttention(wide, layer_idx=0)
        self.self_attn.o_proj = nn.Linear(config.num_attention_heads * wide.head_dim, size, bias=False)
        self.self_attn.config = config  # the attention implementation is the model's
        self.mlp = LlamaMLP(config)
        self.input_layernorm, self.hidden_norm, self.post_attention_layernorm = (
            LlamaRMSNorm(size, eps=config.rms_norm_eps) for _ in range(3))

    def forward(self, hidden_states, attention_mask=None, position_embeddings=None, **kwargs) -> torch.Tensor:
        embedding, state = hidden_states.chunk(2, dim=-1)
        both = torch.cat([self.input_layernorm(embedding), self.hidden_norm(state)], dim=-1)
        kwargs.pop("position_ids", None)
        state = state + self.self_attn(both, position_embeddings, attention_mask, **kwargs)[0]
        return state + self.mlp(self.post_attention_layernorm(state))


class Eagle3Draft(nn.Module):
    """`fc` maps the target's three layer inputs (3 * target width) to the draft's state; `lm` is a
    one-layer Llama whose layer is Eagle3Layer, whose decoder returns the unnormalized state, and
    whose head scores `draft_tokens` (target ids, one per row of the draft's head)."""

    def __init__(self, target: nn.Module, config, draft_tokens: torch.Tensor, target_width: int):
        super().__init__()
        config = copy.deepcopy(config)
        config.num_hidden_layers, config.layer_types = 1, None
        dtype = next(target.parameters()).dtype
        self.feature_layers = feature_layers(target.config.get_text_config().num_hidden_layers)
        lm = borrow_embeddings(AutoModelForCausalLM.from_config(config, dtype=dtype), target)
        lm.model.layers[0] = Eagle3Layer(config).to(dtype)
        norm = lm.model.norm
        lm.model.norm = nn.Identity()  # the state fed back is the layer's output, before the norm
        lm.lm_head = nn.Sequential(norm, SubsetHead(torch.zeros(len(draft_tokens), config.hidden_size, dtype=dtype),
                                                    draft_tokens, config.vocab_size))
        self.lm = lm.eval()
        self.fc = nn.Linear(3 * target_width, config.hidden_size, bias=False, dtype=dtype)

    def own_state(self) -> dict[str, torch.Tensor]:
        """Its weights but the (target's) embedding."""
        borrowed = id(self.lm.get_input_embeddings().weight)
        return {name: p for name, p in self.named_parameters() if id(p) != borrowed}

    def inputs(self, hidden: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """(..., 3 * target width) target features, or (..., d) the draft's own state, at t and
        (...) token ids at t + 1 -> the layer's input [embedding; state]."""
        state = self.fc(hidden) if hidden.shape[-1] != self.fc.out_features else hidden
        return torch.cat([self.lm.get_input_embeddings()(tokens).to(state.dtype), state], dim=-1)
