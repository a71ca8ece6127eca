"""`python -m experiments.train_eagle`: train a feature-level (EAGLE) draft on the frozen target,
on a CPU, a GPU or under `accelerate launch` (configs/train_eagle.yaml; the recipe: specdec.training.eagle_recipe)."""

import hydra
from omegaconf import DictConfig

from experiments.entry_point import train_and_report
from experiments.prompts import evaluation_texts
from specdec.training.eagle_recipe import train_eagle


@hydra.main(config_path="../configs", config_name="train_eagle", version_base="1.3")
def main(cfg: DictConfig) -> None:
    train_and_report(lambda c: train_eagle(c, evaluation_texts()), cfg, "EAGLE draft")


if __name__ == "__main__":
    main()
