"""Decoder layers that run a Llama-style layer in a few large operations (runtime.layers=fused).

A decode step of a small model is mostly not arithmetic: the stock layer issues about 150
torch operations per layer (separate q, k and v products, a six-op RMSNorm, rotary
embeddings rotated twice, reshapes and views), each with a few microseconds of dispatch,
which on a CPU or a launch-bound GPU costs more than the arithmetic of a small model.

FusedDecoderLayer computes exactly the stock layer's function with: one product for q, k
and v and one for the MLP's gate and up projections (their weights are moved into one
tensor per layer, which the stock Linear layers then view, so no weight is stored twice and
the stock model computes what it did), `F.rms_norm`, one rotation of q and k together, and
`F.scaled_dot_product_attention` with grouped keys and values. Masks, positions and the KV
cache come from the stock model's forward as they would for the stock layer, with one change
of kernel, not of function: a prefill of more new tokens than cached ones under the model's
own causal mask runs SDPA's causal kernel on queries padded in front (lower-right causal).

Only layers whose structure is known are swapped (FUSABLE, checked per layer); others stay
stock. The swap is made on the weight-sharing copy that `specdec.runtime.prepare` builds, so the
model passed in keeps its own layers.
"""

import logging

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

FUSABLE = ("llama", "mistral", "qwen2")  # model types whose decoder layer is exactly the Llama layer


class FusedDecoderLayer(nn.Module):
    """The stock Llama-style decoder `layer`, computed with fused products."""

    def __init__(self, layer: nn.Module, config):
        super().__init__()
        attn, mlp = layer.self_attn, layer.mlp
        self.layer_idx = attn.layer_idx
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim, self.scaling = attn.head_dim, attn.scaling
        self.input_norm, self.post_attention_norm = layer.input_layernorm, layer.post_attention_layernorm
        self.qkv = fused_linear([attn.q_proj, attn.k_proj, attn.v_proj])
        self.o_proj = attn.o_proj
        self.gate_up = fused_linear([mlp.gate_proj, mlp.up_proj])
        self.down_proj = mlp.down_proj

    def forward(self, hidden_states, attention_mask=None, position_embeddings=None, cache=None,
                past_key_values=None, **kwargs) -> torch.Tensor:
        cache = cache if cache is not None else past_key_values
        x = hidden_states + self._attention(rms_norm(hidden_states, self.input_norm), attention_mask,
                                            position_embeddings, cache)
        gate, up = self.gate_up(rms_norm(x, self.post_attention_norm)).chunk(2, dim=-1)
        return x + self.down_proj(F.silu(gate) * up)

    def _attention(self, x, mask, position_embeddings, cache) -> torch.Tensor:
        batch, tokens, _ = x.shape
        qkv = self.qkv(x).view(batch, tokens, self.heads + 2 * self.kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = (t.unsqueeze(1) for t in position_embeddings)
        qk = qkv[:, : self.heads + self.kv_heads]  # queries and keys rotate together
        half = self.head_dim // 2
        qk = qk * cos + torch.cat([-qk[..., half:], qk[..., :half]], dim=-1) * sin
        q, k, v = qk[:, : self.heads], qk[:, self.heads :], qkv[:, self.heads + self.kv_heads :]
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        cached = k.shape[-2] - tokens
        if mask is not None and tokens > cached > 0 and getattr(cache, "plain_causal", False):
            # a prefill on top of cached tokens under the model's own causal mask: that mask sends SDPA
            # to its full-matrix kernel (about 1.9x the causal one at 1.6k tokens here); queries padded
            # in front to the keys' length make the lower-right causal attention the plain causal one
            q = torch.cat([q.new_zeros(batch, self.heads, cached, self.head_dim), q], dim=2)
            mask = None
        # no mask: transformers leaves it out only where plain causal attention is right (or 1 query)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None and q.shape[2] > 1,
                                             scale=self.scaling, enable_gqa=self.heads != self.kv_heads)
        out = out[:, :, out.shape[2] - tokens :]
        return self.o_proj(out.transpose(1, 2).reshape(batch, tokens, self.heads * self.head_dim))


class FusedEagle3Layer(FusedDecoderLayer):
    """EAGLE-3's draft layer (specdec.drafts.eagle3_draft.Eagle3Layer) fused alike: its input is
    [token embedding; state], each half normalized on its own, q, k and v read both (2d), and the
    residual is on the state."""

    def __init__(self, layer: nn.Module, config):
        super().__init__(layer, config)
        self.hidden_norm = layer.hidden_norm

    def forward(self, hidden_states, attention_mask=None, position_embeddings=None, cache=None,
                past_key_values=None, **kwargs) -> torch.Tensor:
        cache = cache if cache is not None else past_key_values
        embedding, state = hidden_states.chunk(2, dim=-1)
        both = torch.cat([rms_norm(embedding, self.input_norm), rms_norm(state, self.hidden_norm)], dim=-1)
        x = state + self._attention(both, attention_mask, position_embeddings, cache)
        gate, up = self.gate_up(rms_norm(x, self.post_attention_norm)).chunk(2, dim=-1)
        return x + self.down_proj(F.silu(gate) * up)


def rms_norm(x: torch.Tensor, norm: nn.Module) -> torch.Tensor:
    """The Llama RMSNorm `norm` applied to x, as one fused op (an nn.Identity, as the first layer of
    public EAGLE-1/2 drafts has: x)."""
    if isinstance(norm, nn.Identity):
        return x
    return F.rms_norm(x, (x.shape[-1],), norm.weight, norm.variance_epsilon)


def fused_linear(parts: list[nn.Linear]) -> nn.Linear:
    """One Linear whose output is the `parts`' outputs side by side. The parts' weights (and
    biases) become views of its tensors: no second copy, and their values do not change."""
    fused = nn.Linear(parts[0].in_features, sum(p.out_features for p in parts), bias=parts[0].bias is not None,
                      device="meta")
    for name in ("weight", "bias"):
        if getattr(fused, name) is None:
            continue
        tensors = [getattr(p, name).detach() for p in parts]
        stacked = _stacked_view(tensors)
        if stacked is None:  # first fusion: move the parts into one tensor, then let them view it
            stacked = torch.cat(tensors)
            start = 0
            for part, tensor in zip(parts, tensors):
                getattr(part, name).data = stacked[start : start + tensor.shape[0]]
                start += tensor.shape[0]
        setattr(fused, name, nn.Parameter(stacked, requires_grad=False))
    return fused


def _stacked_view(tensors: list[torch.Tensor]) -> torch.Tensor | None:
    """The tensors as one, when they already lie one after another in one storage (fused by an
    earlier decoding model of the same weights); else None."""
    first = tensors[0]
    address = first.data_ptr()
    for tensor in tensors:
        if not tensor.is_contiguous() or tensor.untyped_storage().data_ptr() != first.untyped_storage().data_ptr() \
                or tensor.data_ptr() != address:
            return None
        address += tensor.numel() * tensor.element_size()
    rows = sum(t.shape[0] for t in tensors)
    return first.as_strided((rows, *first.shape[1:]), first.stride())


def fusable(layer: nn.Module, config) -> bool:
    """Whether `layer` is a Llama-style decoder layer FusedDecoderLayer computes exactly."""
    attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
    if getattr(config, "model_type", None) not in FUSABLE or attn is None or mlp is None:
        return False
    if getattr(config, "_attn_implementation", "sdpa") not in ("sdpa", "eager"):
        return False  # flash and flex attention get masks in other forms than SDPA takes
    linears = [getattr(attn, n, None) for n in ("q_proj", "k_proj", "v_proj", "o_proj")]
    linears += [getattr(mlp, n, None) for n in ("gate_proj", "up_proj", "down_proj")]
    norms = [getattr(layer, n, None) for n in ("input_layernorm", "post_attention_layernorm")]
    if eagle3_layer(layer, config):
        norms.append(layer.hidden_norm)
    elif attn.q_proj.in_features != config.hidden_size:
        return False
    return (all(isinstance(m, nn.Linear) for m in linears)
            and all(isinstance(n, nn.Identity) or hasattr(n, "variance_epsilon") and hasattr(n, "weight") for n in norms)
            and getattr(config, "hidden_act", None) == "silu"
            and len({(m.weight.dtype, m.weight.device) for m in linears}) == 1
            and (attn.q_proj.bias is None) == (attn.k_proj.bias is None) == (attn.v_proj.bias is None)
            and mlp.gate_proj.bias is None and mlp.up_proj.bias is None)


def eagle3_layer(layer: nn.Module, config) -> bool:
    """Whether `layer` is shaped like EAGLE-3's: q, k and v read [embedding; state] (2 * hidden_size)."""
    q_proj = getattr(getattr(layer, "self_attn", None), "q_proj", None)
    return hasattr(layer, "hidden_norm") and getattr(q_proj, "in_features", None) == 2 * config.hidden_size


def fuse_decoder_layers(model: nn.Module) -> int:
    """Swap, in place, every fusable decoder layer of `model` for a FusedDecoderLayer; returns
    how many were swapped (0 for an architecture outside FUSABLE: it runs stock)."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        return 0
    config = model.config.get_text_config(decoder=True)
    swapped = 0
    for index, layer in enumerate(layers):
        if fusable(layer, config):
            layers[index] = (FusedEagle3Layer if eagle3_layer(layer, config) else FusedDecoderLayer)(layer, config)
            swapped += 1
    if swapped < len(layers):
        log.info("%s: %d of %d decoder layers fused (runtime.layers=fused supports %s)",
                 type(model).__name__, swapped, len(layers), ", ".join(FUSABLE))
    return swapped
