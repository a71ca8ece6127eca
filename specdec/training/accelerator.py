"""One `accelerate.Accelerator` per training run: the same trainer code on a CPU, one GPU, or N
processes under `accelerate launch --num_processes N` (gloo on CPUs, NCCL on GPUs).

train.mixed_precision: auto is bf16 autocast on a GPU with bf16 and float32 on a CPU (where bf16
products are emulated unless the CPU has AVX512-BF16); no, bf16 and fp16 force one. Weights and
optimizer state stay float32 either way. train.grad_accum micro-batches make one optimizer step;
with N processes each takes one of every N, so N processes at grad_accum k take the same steps
as one process at grad_accum N * k.
"""

import logging

import torch
from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState, GradientState
from omegaconf import DictConfig

from specdec.errors import ConfigError

log = logging.getLogger(__name__)
PRECISIONS = ("auto", "no", "bf16", "fp16")


def mixed_precision(name: str, device: torch.device) -> str:
    """The precision `name` (train.mixed_precision) means on `device`: auto is bf16 on a GPU with
    bf16 and no (float32) elsewhere."""
    if name == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "no"
    if name == "fp16" and device.type == "cpu":
        raise ConfigError("train.mixed_precision=fp16 needs a GPU: set it to auto, no or bf16")
    if name == "bf16" and device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        log.warning("train.mixed_precision=bf16 on a CPU without bf16 matrix products (emulated, slower than "
                    "float32): set train.mixed_precision=no")
    return name


def trainer_accelerator(train: DictConfig) -> Accelerator:
    """A fresh Accelerator for a run's `train` settings. accelerate keeps its settings in
    process-wide singletons; they are reset (the process group stays) so that one process can
    run several trainers, as the tests do."""
    AcceleratorState._reset_state()
    GradientState._reset_state()
    state = PartialState(cpu=not torch.cuda.is_available())  # on CPUs, N processes talk through gloo
    precision = mixed_precision(train.mixed_precision, state.device)
    # the schedule steps once per optimizer step (not once per process, accelerate's default)
    return Accelerator(cpu=state.device.type == "cpu", mixed_precision=precision,
                       gradient_accumulation_steps=train.grad_accum, step_scheduler_with_optimizer=False)
