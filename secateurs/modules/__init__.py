"""``nn.Module`` classes that secateurs builds into models (attention with pruned heads)."""
