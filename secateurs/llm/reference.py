"""The same sequential procedure on a model held whole in memory: the streaming code's reference.

:func:`prune_in_memory` prunes a loaded Hugging Face causal LM with the per-layer code of
:mod:`secateurs.llm.layerwise`, but takes the embeddings, rotary embeddings and causal mask
from the model itself (``model.model.embed_tokens``, ``model.model.rotary_emb``,
``transformers``' ``create_causal_mask``). Streaming from shards must give exactly its masks
and weights; it is also the way to prune a model that fits in memory.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import layerwise


def prune_in_memory(model: nn.Module, calibration: Tensor | None, sparsity: float | str = 0.5,
                    method: str = "sparsegpt", layer_sparsity: list[float] | None = None,
                    batch_size: int = 8) -> dict[str, Tensor]:
    """Prune ``model``'s decoder layers in place, in order, each on the outputs of the pruned ones before it.

    Args:
        model: a loaded Llama-layout ``*ForCausalLM``.
        calibration: token ids ``(samples, seqlen)`` (``None`` for magnitude).
        sparsity: a fraction in (0, 1) or ``"N:M"``.
        method: one of :data:`secateurs.llm.layerwise.METHODS`.
        layer_sparsity: per-layer sparsities (e.g. from OWL); ``sparsity`` for each when ``None``.
        batch_size: windows per forward pass.

    Returns:
        The keep masks by parameter name (``"model.layers.0.mlp.up_proj.weight"``).
    """
    from transformers.masking_utils import create_causal_mask

    goal = layerwise.target(sparsity)
    layerwise.check_method(method)
    base = model.model
    n = len(base.layers)
    layer_sparsity = layer_sparsity or [goal.sparsity] * n
    batches: list[Tensor] = []
    if calibration is not None and method != "magnitude":
        with torch.no_grad():
            batches = [base.embed_tokens(ids).float() for ids in calibration.split(batch_size)]

    def forward(layer: nn.Module, x: Tensor) -> Tensor:
        pos = torch.arange(x.shape[1]).unsqueeze(0)
        mask = create_causal_mask(config=model.config, inputs_embeds=x, attention_mask=None,
                                  past_key_values=None, position_ids=pos)
        with torch.no_grad():
            out = layer(x, attention_mask=mask, position_ids=pos, position_embeddings=base.rotary_emb(x, pos))
        return out[0] if isinstance(out, tuple) else out

    masks = {}
    for i, layer in enumerate(base.layers):
        kept = layerwise.prune_layer(layer, batches, forward, method, goal, layer_sparsity[i])
        masks.update({f"model.layers.{i}.{name}.weight": m for name, m in kept.items()})
        batches = [forward(layer, x) for x in batches]
    return masks
