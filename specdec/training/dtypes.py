"""The dtype the target answers the training prompts in (data.dtype), resolved for the CPU."""

import functools
import logging

import torch

from specdec.models import resolve_dtype

log = logging.getLogger(__name__)


@functools.cache
def cpu_dtype(name: str, knob: str) -> torch.dtype:
    """The dtype a training knob names, for the CPU; bfloat16 warns (once) where the CPU has no
    bf16 products, since emulating them is slower than float32."""
    dtype = resolve_dtype(name, torch.device("cpu"), knob)
    if dtype == torch.bfloat16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        log.warning("%s=bfloat16 on a CPU without bf16 matrix products (emulated, slower than float32): "
                    "set %s=float32", knob, knob)
    return dtype
