"""Tiny random models and a byte-level tokenizer built in-process: smoke runs (`model=tiny-random`)
and tests need no file from outside."""

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

BYTE_VOCAB = 256
SPECIALS = ["<eos>", "<pad>"]  # ids 256 and 257

_COMMON = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
               max_position_embeddings=512, tie_word_embeddings=False)
ARCHITECTURES = {
    "llama": dict(num_key_value_heads=2),
    "qwen2": dict(num_key_value_heads=2),
    "mistral": dict(num_key_value_heads=2, sliding_window=None),
    "gemma": dict(num_key_value_heads=1, head_dim=16),
    "phi3": dict(num_key_value_heads=4),
    "gpt_neox": dict(rotary_pct=0.5, use_parallel_residual=True),
}


def tiny_random_model(arch: str = "llama", vocab_size: int = BYTE_VOCAB + len(SPECIALS), seed: int = 0,
                      dtype=torch.float32, **overrides):
    """A small randomly initialised causal LM of a given architecture, in eval mode."""
    settings = {**_COMMON, **ARCHITECTURES[arch], **overrides}
    config = AutoConfig.for_model(arch, vocab_size=vocab_size, eos_token_id=vocab_size - 2,
                                  pad_token_id=vocab_size - 1, bos_token_id=None, **settings)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """UTF-8 bytes as tokens 0..255, then <eos> and <pad>; no merges, no files."""
    byte_to_char = pre_tokenizers.ByteLevel.alphabet()
    alphabet = sorted(byte_to_char)
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    vocab.update({tok: BYTE_VOCAB + i for i, tok in enumerate(SPECIALS)})
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>", pad_token="<pad>")
