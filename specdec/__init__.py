"""Speculative decoding on Hugging Face causal LMs: one decoding loop, many strategies."""

from specdec.decoding import Decoder, GenerationConfig, GenerationResult
from specdec.errors import ConfigError

__all__ = ["Decoder", "GenerationConfig", "GenerationResult", "ConfigError"]
