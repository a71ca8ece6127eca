"""`python -m experiments.train_draft`: distill a small draft from the target, on a CPU, a GPU
or under `accelerate launch` (configs/train_draft.yaml; the recipe: specdec.training.draft_recipe)."""

import hydra
from omegaconf import DictConfig

from experiments.entry_point import train_and_report
from experiments.prompts import evaluation_texts
from specdec.training.draft_recipe import train_draft


@hydra.main(config_path="../configs", config_name="train_draft", version_base="1.3")
def main(cfg: DictConfig) -> None:
    train_and_report(lambda c: train_draft(c, evaluation_texts()), cfg, "draft")


if __name__ == "__main__":
    main()
