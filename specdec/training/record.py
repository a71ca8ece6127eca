"""What a shipped draft or set of heads records beside its weights, to be reproduced."""

from omegaconf import DictConfig, OmegaConf


def training_record(cfg: DictConfig, data: list[dict], data_sha256: str, data_minutes: float, results: dict) -> dict:
    """Its target, the whole config, the data's hash, size and answering time, and the training's results."""
    return {"target": cfg.model.name_or_path, "config": OmegaConf.to_container(cfg, resolve=True),
            "data_sha256": data_sha256, "data_sequences": len(data),
            "data_answer_tokens": sum(len(r["answer_ids"]) for r in data), "data_minutes": round(data_minutes, 1),
            **results}
