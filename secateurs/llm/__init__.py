"""Language models larger than memory: prune and evaluate them one decoder layer at a time.

``sc.llm.prune(checkpoint_dir, out_dir, sparsity=0.5, method="sparsegpt")`` reads a sharded
Hugging Face checkpoint (Llama layout: ``llama``, ``mistral``, ``qwen2``) one decoder layer at a
time, prunes it on calibration activations that went through the layers pruned before it,
and writes it straight into output shards; ``sc.llm.perplexity(checkpoint_dir, text)``
streams the same way. See "Language models larger than memory" in docs/guide.md.
"""

from __future__ import annotations

from .activations import DEFAULT_BUDGET
from .checkpoint import Checkpoint
from .evaluate import perplexity
from .layerwise import METHODS
from .reference import prune_in_memory
from .stream import ALLOCATIONS, LLMPruneResult, prune
from .text import bundled

__all__ = ["ALLOCATIONS", "DEFAULT_BUDGET", "METHODS", "Checkpoint", "LLMPruneResult", "bundled", "perplexity",
           "prune", "prune_in_memory"]
