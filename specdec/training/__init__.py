"""The library side of training drafts and heads on the frozen target (the recipes behind
`python -m experiments.train_draft`, `train_eagle` and `train_medusa`): the training data
(prompts_corpus, answers, batch_answers, features), the optimization loop on accelerate
(accelerator, optim, checkpoint) and one recipe per kind of draft (draft_recipe, eagle_recipe, medusa_recipe)."""
