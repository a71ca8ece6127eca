"""Small random checkpoints in the public layouts, and reference forwards written from the public
code, for tests/test_public_checkpoints.py.

Key names and shapes follow SafeAILab/EAGLE eagle/model/cnets1.py (EAGLE-1/2: `Model` with `fc`
over [embedding; state] and `layers`, whose layer 0 has no input_layernorm, no final norm, the
target's head), eagle/model/cnets.py (EAGLE-3: `midlayer` with q/k/v over 2 * hidden, `hidden_norm`,
`fc` over 3 * hidden, its own `norm` and `lm_head` over draft_vocab_size rows, `d2t` offsets and a
`t2d` mask) and FasterDecoding/Medusa medusa/model/medusa_model.py (`medusa_head[i]` =
Sequential(*[ResBlock] * medusa_num_layers, Linear(hidden, vocab, bias=False)), saved as
medusa_lm_head.pt; `[ResBlock] * n` repeats one block, so its n entries hold the same tensors).
The references below re-derive those forwards from the public code's equations, with no module of ours.
"""

import json
import math
from pathlib import Path

import torch
from safetensors.torch import save_file


def _randn(generator, *shape, norm=False):
    if norm:
        return 1 + 0.1 * torch.randn(shape, generator=generator)
    return torch.randn(shape, generator=generator) / math.sqrt(shape[-1])


def _layer_config(target) -> dict:
    c = target.config
    return dict(hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
                num_attention_heads=c.num_attention_heads, num_key_value_heads=c.num_key_value_heads,
                rms_norm_eps=1e-6, rope_theta=10000.0, max_position_embeddings=512, hidden_act="silu",
                vocab_size=c.vocab_size, pad_token_id=None)


def _attention_weights(g, prefix: str, cfg: dict, width: int) -> dict:
    d, heads, kv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = d // heads
    return {f"{prefix}self_attn.q_proj.weight": _randn(g, heads * hd, width),
            f"{prefix}self_attn.k_proj.weight": _randn(g, kv * hd, width),
            f"{prefix}self_attn.v_proj.weight": _randn(g, kv * hd, width),
            f"{prefix}self_attn.o_proj.weight": _randn(g, d, heads * hd),
            f"{prefix}mlp.gate_proj.weight": _randn(g, cfg["intermediate_size"], d),
            f"{prefix}mlp.up_proj.weight": _randn(g, cfg["intermediate_size"], d),
            f"{prefix}mlp.down_proj.weight": _randn(g, d, cfg["intermediate_size"]),
            f"{prefix}post_attention_layernorm.weight": _randn(g, d, norm=True)}


def write_eagle1(directory: Path, target, seed: int = 0, layers: int = 1) -> dict:
    """An EAGLE-1/2 checkpoint (config.json + pytorch_model.bin, as ea_model.py loads it)."""
    g = torch.Generator().manual_seed(seed)
    cfg = {**_layer_config(target), "architectures": ["LlamaForCausalLM"], "num_hidden_layers": layers, "bias": True}
    d = cfg["hidden_size"]
    state = {"embed_tokens.weight": target.get_input_embeddings().weight.detach().clone(),
             "fc.weight": _randn(g, d, 2 * d), "fc.bias": _randn(g, d)}
    for i in range(layers):
        state.update(_attention_weights(g, f"layers.{i}.", cfg, d))
        if i:
            state[f"layers.{i}.input_layernorm.weight"] = _randn(g, d, norm=True)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(cfg))
    torch.save(state, directory / "pytorch_model.bin")
    return state


def write_eagle3(directory: Path, target, draft_vocab: int = 100, seed: int = 0) -> dict:
    """An EAGLE-3 checkpoint (config.json + model.safetensors) with a draft vocabulary of `draft_vocab` tokens."""
    g = torch.Generator().manual_seed(seed)
    cfg = {**_layer_config(target), "architectures": ["LlamaForCausalLMEagle3"], "num_hidden_layers": 1,
           "draft_vocab_size": draft_vocab}
    d, vocab = cfg["hidden_size"], cfg["vocab_size"]
    tokens = torch.randperm(vocab, generator=g)[:draft_vocab].sort().values
    t2d = torch.zeros(vocab, dtype=torch.bool)
    t2d[tokens] = True
    state = {**_attention_weights(g, "midlayer.", cfg, 2 * d),
             "midlayer.hidden_norm.weight": _randn(g, d, norm=True),
             "midlayer.input_layernorm.weight": _randn(g, d, norm=True),
             "fc.weight": _randn(g, d, 3 * d), "norm.weight": _randn(g, d, norm=True),
             "lm_head.weight": _randn(g, draft_vocab, d), "d2t": tokens - torch.arange(draft_vocab), "t2d": t2d}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(cfg))
    save_file(state, directory / "model.safetensors")
    return state


def write_medusa1(directory: Path, target, heads: int = 3, layers: int = 1, seed: int = 0) -> dict:
    """A Medusa-1 checkpoint (config.json + medusa_lm_head.pt, the state of medusa_head)."""
    g = torch.Generator().manual_seed(seed)
    d, vocab = target.config.hidden_size, target.config.vocab_size
    state = {}
    for i in range(heads):
        weight, bias = _randn(g, d, d), _randn(g, d)  # one ResBlock, repeated `layers` times
        for j in range(layers):
            state[f"{i}.{j}.linear.weight"], state[f"{i}.{j}.linear.bias"] = weight, bias
        state[f"{i}.{layers}.weight"] = _randn(g, vocab, d)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps({"medusa_num_heads": heads, "medusa_num_layers": layers,
                                                       "base_model_name_or_path": "tiny-random"}))
    torch.save(state, directory / "medusa_lm_head.pt")
    return state


# --- reference forwards (the public code's equations; one sequence, no cache) ---

def rms_norm(x, weight, eps=1e-6):
    x32 = x.float()
    return weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def attention(x, state, prefix: str, heads: int, kv_heads: int, theta: float = 10000.0):
    """cnets' LlamaAttention over x (n, width): rotary at positions 0..n-1, causal, grouped keys."""
    n = x.shape[0]
    q = (x @ state[prefix + "q_proj.weight"].T).view(n, heads, -1).transpose(0, 1)
    k = (x @ state[prefix + "k_proj.weight"].T).view(n, kv_heads, -1).transpose(0, 1)
    v = (x @ state[prefix + "v_proj.weight"].T).view(n, kv_heads, -1).transpose(0, 1)
    hd = q.shape[-1]
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2).float() / hd))
    freqs = torch.arange(n).float()[:, None] * inv[None]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos(), emb.sin()
    q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
    k, v = k.repeat_interleave(heads // kv_heads, dim=0), v.repeat_interleave(heads // kv_heads, dim=0)
    scores = q @ k.transpose(1, 2) / math.sqrt(hd)
    scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), torch.finfo(torch.float32).min)
    out = scores.softmax(dim=-1) @ v
    return out.transpose(0, 1).reshape(n, -1) @ state[prefix + "o_proj.weight"].T


def mlp(x, state, prefix: str):
    gate, up = x @ state[prefix + "gate_proj.weight"].T, x @ state[prefix + "up_proj.weight"].T
    return (torch.nn.functional.silu(gate) * up) @ state[prefix + "down_proj.weight"].T


def eagle1_reference(state, cfg, hidden, tokens, target_head):
    """cnets1.Model.forward then the target's head: (states (n, d), logits (n, V))."""
    h = torch.cat((state["embed_tokens.weight"][tokens], hidden), dim=-1) @ state["fc.weight"].T + state["fc.bias"]
    for i in range(cfg["num_hidden_layers"]):
        p = f"layers.{i}."
        x = rms_norm(h, state[p + "input_layernorm.weight"]) if i else h
        h = h + attention(x, state, p + "self_attn.", cfg["num_attention_heads"], cfg["num_key_value_heads"])
        h = h + mlp(rms_norm(h, state[p + "post_attention_layernorm.weight"]), state, p + "mlp.")
    return h, h @ target_head.T


def eagle3_reference(state, cfg, hidden, tokens, embedding):
    """cnets.Model.forward (fc only for 3 * d inputs) then its own norm and head: (states (n, d),
    draft-vocabulary logits (n, draft_vocab), the target token of each draft row)."""
    h = hidden @ state["fc.weight"].T if hidden.shape[-1] != embedding.shape[-1] else hidden
    p = "midlayer."
    x = torch.cat((rms_norm(embedding[tokens], state[p + "input_layernorm.weight"]),
                   rms_norm(h, state[p + "hidden_norm.weight"])), dim=-1)
    h = h + attention(x, state, p + "self_attn.", cfg["num_attention_heads"], cfg["num_key_value_heads"])
    h = h + mlp(rms_norm(h, state[p + "post_attention_layernorm.weight"]), state, p + "mlp.")
    rows = torch.arange(len(state["d2t"]))
    return h, rms_norm(h, state["norm.weight"]) @ state["lm_head.weight"].T, rows + state["d2t"]


def medusa1_reference(state, heads: int, layers: int, hidden):
    """medusa_head[i](hidden) for every head: (heads, n, V)."""
    out = []
    for i in range(heads):
        x = hidden
        for j in range(layers):
            x = x + torch.nn.functional.silu(x @ state[f"{i}.{j}.linear.weight"].T + state[f"{i}.{j}.linear.bias"])
        out.append(x @ state[f"{i}.{layers}.weight"].T)
    return torch.stack(out)
