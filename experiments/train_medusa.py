"""`python -m experiments.train_medusa`: Medusa-1 heads on the frozen target, on a CPU, a GPU
or under `accelerate launch` (configs/train_medusa.yaml; the recipe: specdec.training.medusa_recipe), their default tree
picked with the cost model's timings of verify passes."""

import hydra
from omegaconf import DictConfig

from experiments.cost_model import measure_costs
from experiments.entry_point import train_and_report
from experiments.prompts import evaluation_texts
from specdec.training.medusa_recipe import train_medusa


def verify_ms(model, context_tokens: int, max_tokens: int) -> dict[int, float]:
    """Median ms of a pass of `model` over k = 1..max_tokens new tokens after `context_tokens` cached ones."""
    return measure_costs(model, None, "preallocated", context_tokens, max_tokens)["verify_ms"]


@hydra.main(config_path="../configs", config_name="train_medusa", version_base="1.3")
def main(cfg: DictConfig) -> None:
    train_and_report(lambda c: train_medusa(c, evaluation_texts(), verify_ms), cfg, "heads",
                     hidden=("config", "topk_accuracy"))


if __name__ == "__main__":
    main()
