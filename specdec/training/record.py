"""What a shipped draft or set of heads records beside its weights, to be reproduced."""

import hashlib
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


def data_digest(files: list[Path]) -> str:
    """sha256 of the data.jsonl files, in order: the data hash a trained checkpoint records."""
    return hashlib.sha256(b"".join(path.read_bytes() for path in files)).hexdigest()


def training_record(cfg: DictConfig, data: list[dict], data_sha256: str, data_minutes: float, results: dict) -> dict:
    """Its target, the whole config, the data's hash, size and answering time, and the training's results."""
    return {"target": cfg.model.name_or_path, "config": OmegaConf.to_container(cfg, resolve=True),
            "data_sha256": data_sha256, "data_sequences": len(data),
            "data_answer_tokens": sum(len(r["answer_ids"]) for r in data), "data_minutes": round(data_minutes, 1),
            **results}
