"""The frozen target every trainer distills from."""

import torch
from omegaconf import DictConfig

from specdec.models import load_model


def frozen_target(cfg: DictConfig, device: torch.device):
    """Seed torch with cfg.seed, use cfg.threads (null: torch's default), and load the target in
    float32 (the trainers' mixed precision autocasts its products) on `device` (the accelerator's)
    with its gradients off: (model, tokenizer)."""
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    target, tokenizer = load_model(cfg.model.name_or_path, device, torch.float32)
    target.requires_grad_(False)
    return target, tokenizer
