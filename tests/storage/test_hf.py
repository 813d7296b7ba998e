"""sc.export_hf: pruned and compacted transformers models as from_pretrained folders (secateurs.storage.hf)."""

import warnings

import pytest
import torch

import secateurs as sc
from tests.transformer_models import FAMILIES, HEADS_IN_CONFIG, output


def _auto(model):
    import transformers as tf

    return tf.AutoModelForCausalLM if hasattr(model, "lm_head") else tf.AutoModel


def _round_trip(model, x, tmp_path, **prune):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.prune(model, 0.5, granularity="channel", scope="local", example_inputs=x, **prune)
        small = sc.compact(model, x)
        folder = sc.export_hf(small, tmp_path / "out")
        back = _auto(model).from_pretrained(folder).eval()
    with torch.no_grad():
        return float((output(back(*x)) - output(model(*x))).abs().max()), back


@pytest.mark.parametrize("family", sorted(HEADS_IN_CONFIG))
def test_heads_and_neurons_round_trip_through_from_pretrained(family, tmp_path):
    pytest.importorskip("transformers")
    model, x = FAMILIES[family][0]()
    diff, back = _round_trip(model.eval(), x, tmp_path)
    assert diff <= 1e-4
    assert back.config.num_attention_heads == 2 and back.config.intermediate_size == 32
    if family != "vit":
        assert back.config.num_key_value_heads == 1  # one key/value group of two left
        assert back.lm_head.weight is back.model.embed_tokens.weight


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert", "gpt2"])
def test_mlp_neurons_round_trip_where_the_config_derives_the_head_size(family, tmp_path):
    pytest.importorskip("transformers")
    model, x = FAMILIES[family][0]()
    attention = {"*.attn.*" if family == "gpt2" else "*.attention.*": None}
    diff, back = _round_trip(model.eval(), x, tmp_path, layers=attention)
    assert diff <= 1e-4
    sizes = {k: getattr(back.config, k, None) for k in ("intermediate_size", "n_inner", "hidden_dim")}
    assert 32 in sizes.values()


def test_heads_a_config_cannot_hold_are_refused_naming_the_tensor(tmp_path):
    pytest.importorskip("transformers")
    model, x = FAMILIES["bert"][0]()
    small = sc.compact(model.eval(), x) if sc.prune(model, 0.5, granularity="channel", scope="local",
                                                    example_inputs=x) else None
    with pytest.raises(sc.PruningError, match=r"attention\.self\.query\.weight would be \(32, 32\)"):
        sc.export_hf(small, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_layers_of_different_sizes_are_refused_naming_them(tmp_path):
    pytest.importorskip("transformers")
    model, x = FAMILIES["llama"][0]()
    layers = {"model.layers.0.mlp.*": 0.5, "model.layers.1.mlp.*": 0.25, "*self_attn*": None}
    sc.prune(model.eval(), 0.5, granularity="channel", scope="local", example_inputs=x, layers=layers)
    with pytest.raises(sc.PruningError, match="model.layers.0.mlp.down_proj: 32, model.layers.1.mlp.down_proj: 48"):
        sc.export_hf(sc.compact(model, x), tmp_path / "out")


def test_masked_model_exports_baked_weights_and_replaces_an_old_folder(tmp_path):
    pytest.importorskip("transformers")
    model, x = FAMILIES["gpt2"][0]()
    sc.prune(model.eval(), 0.5)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "stale.txt").write_text("old")
    back = _auto(model).from_pretrained(sc.export_hf(model, tmp_path / "out")).eval()
    with torch.no_grad():
        assert float((output(back(*x)) - output(model(*x))).abs().max()) <= 1e-4
    assert not (tmp_path / "out" / "stale.txt").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sc.masks(model), "export_hf must not change the model it was given"


def test_a_model_that_is_not_from_transformers_is_refused(tmp_path):
    with pytest.raises(sc.PruningError, match="export_hf needs a transformers PreTrainedModel, got Linear"):
        sc.export_hf(torch.nn.Linear(2, 2), tmp_path / "out")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_hidden_width_round_trips_through_from_pretrained(family, tmp_path):
    pytest.importorskip("transformers")
    model, x = FAMILIES[family][0]()
    model.eval()
    with pytest.warns(UserWarning, match="hidden=True removed channels of the residual stream"):
        result = sc.prune(model, 0.5, granularity="channel", scope="local", example_inputs=x, hidden=True)
    assert len(result.sliced_norms) == 5  # two per layer and the final (or embedding) norm
    with pytest.raises(sc.PruningError, match="export the compacted model"):
        sc.export_hf(model, tmp_path / "masked")
    small = sc.compact(model, x)
    if hasattr(small, "lm_head"):
        assert small.lm_head.weight is small.get_input_embeddings().weight  # sliced alike, one parameter again
    back = _auto(model).from_pretrained(sc.export_hf(small, tmp_path / "out")).eval()
    with torch.no_grad():
        assert (output(back(*x)) - output(small(*x))).abs().max() <= 1e-4
    assert back.config.hidden_size == 16
    if hasattr(back, "lm_head"):
        assert back.lm_head.weight is back.get_input_embeddings().weight  # still tied
