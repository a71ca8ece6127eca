"""How models run fast: KV caches, fused layers, few-row products, and the step that prepares modules."""
