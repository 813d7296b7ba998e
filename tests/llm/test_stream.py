"""Streaming from shards gives exactly the in-memory sequential procedure's masks and weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import secateurs as sc
from secateurs.errors import PruningError
from secateurs.llm import checkpoint as ckpt_module
from secateurs.llm.output import RECORD

from .conftest import save_tiny, transformers


def _load(path: Path, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    return transformers.LlamaForCausalLM.from_pretrained(path, dtype=dtype).eval()


def _prunable(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if k.startswith("model.layers.") and k.endswith("proj.weight")}


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
@pytest.mark.parametrize("sparsity", [0.5, "2:4"])
def test_streaming_equals_in_memory(checkpoint, calibration, tmp_path, method, sparsity):
    sc.llm.prune(checkpoint, tmp_path / "out", sparsity, method, calibration, batch_size=4, show_progress=False)
    ref = _load(checkpoint)
    masks = sc.llm.prune_in_memory(ref, calibration, sparsity, method, batch_size=4)
    out = _load(tmp_path / "out").state_dict()  # loads with from_pretrained alone
    for name, w in ref.state_dict().items():
        assert torch.equal(out[name], w), name
    for name, keep in masks.items():
        assert torch.equal(out[name] != 0, keep), name
        if sparsity == 0.5:  # exactly half of every row
            assert bool(((~keep).sum(dim=1) == keep.shape[1] // 2).all()), name
        else:  # at most 2 non-zeros in every 4 consecutive inputs
            assert int(keep.reshape(keep.shape[0], -1, 4).sum(dim=2).max()) == 2, name
    assert len(masks) == 2 * 7


def test_sparsegpt_changes_the_kept_weights(checkpoint, calibration, tmp_path):
    sc.llm.prune(checkpoint, tmp_path / "out", 0.5, "sparsegpt", calibration, show_progress=False)
    dense, out = _load(checkpoint).state_dict(), _load(tmp_path / "out").state_dict()
    name = "model.layers.1.mlp.down_proj.weight"
    kept = out[name] != 0
    assert not torch.equal(out[name][kept], dense[name][kept])


def test_spilled_to_disk_gives_the_same_result(checkpoint, calibration, tmp_path):
    sc.llm.prune(checkpoint, tmp_path / "mem", 0.5, "sparsegpt", calibration, batch_size=2, show_progress=False)
    sc.llm.prune(checkpoint, tmp_path / "disk", 0.5, "sparsegpt", calibration, batch_size=2, memory_budget=0,
                 show_progress=False)
    a, b = _load(tmp_path / "mem").state_dict(), _load(tmp_path / "disk").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_interrupted_after_layer_1_resumes_to_the_identical_output(checkpoint, calibration, tmp_path, monkeypatch):
    sc.llm.prune(checkpoint, tmp_path / "whole", 0.5, "sparsegpt", calibration, show_progress=False)
    real = ckpt_module.Checkpoint.layer_tensors

    def fail_at_1(self, i):
        if i == 1:
            raise KeyboardInterrupt
        return real(self, i)

    monkeypatch.setattr(ckpt_module.Checkpoint, "layer_tensors", fail_at_1)
    with pytest.raises(KeyboardInterrupt):
        sc.llm.prune(checkpoint, tmp_path / "cut", 0.5, "sparsegpt", calibration, show_progress=False)
    assert not (tmp_path / "cut" / "model.safetensors.index.json").exists()  # not loadable half-done
    monkeypatch.undo()
    result = sc.llm.prune(checkpoint, tmp_path / "cut", 0.5, "sparsegpt", calibration, show_progress=False)
    assert result.resumed_from == 1
    a, b = _load(tmp_path / "whole").state_dict(), _load(tmp_path / "cut").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_other_inputs_start_over(checkpoint, calibration, tmp_path):
    sc.llm.prune(checkpoint, tmp_path / "out", 0.5, "wanda", calibration, show_progress=False)
    with pytest.warns(UserWarning, match="other inputs; starting over"):
        result = sc.llm.prune(checkpoint, tmp_path / "out", "2:4", "wanda", calibration, show_progress=False)
    assert result.resumed_from == 0
    again = sc.llm.prune(checkpoint, tmp_path / "out", "2:4", "wanda", calibration, show_progress=False)
    assert again.resumed_from == 2 and (tmp_path / "out" / RECORD).is_file()


def test_bf16_stays_bf16_and_exactly_sparse(tmp_path, calibration):
    path = save_tiny(tmp_path / "bf16", torch.bfloat16)
    result = sc.llm.prune(path, tmp_path / "out", 0.5, "wanda", calibration, show_progress=False)
    out = _load(tmp_path / "out", dtype=None).state_dict()
    w = out["model.layers.0.self_attn.q_proj.weight"]
    assert w.dtype == torch.bfloat16 and float((w == 0).float().mean()) == 0.5
    assert [e["layer"] for e in result.layers] == [0, 1] and result.peak_rss_bytes > 0
    assert all(e["read_s"] >= 0 and e["compute_s"] > 0 and e["write_s"] > 0 for e in result.layers)


def test_owl_gives_layers_different_sparsities_averaging_the_target(checkpoint, calibration, tmp_path):
    result = sc.llm.prune(checkpoint, tmp_path / "out", 0.5, "wanda", calibration, "owl", show_progress=False)
    s = result.layer_sparsity
    assert s[0] != s[1] and abs(sum(s) / 2 - 0.5) < 1e-12 and all(abs(x - 0.5) <= 0.08 + 1e-12 for x in s)
    ref = _load(checkpoint)
    sc.llm.prune_in_memory(ref, calibration, 0.5, "wanda", layer_sparsity=s)
    out = _load(tmp_path / "out").state_dict()
    assert all(torch.equal(out[k], v) for k, v in ref.state_dict().items())


def test_bundled_calibration_and_tokenizer_files_copied(tmp_path):
    path = save_tiny(tmp_path / "tok", tokenizer=True)
    sc.llm.prune(path, tmp_path / "out", 0.5, "wanda", samples=4, seqlen=16, show_progress=False)
    assert (tmp_path / "out" / "tokenizer.json").is_file()
    assert transformers.AutoTokenizer.from_pretrained(tmp_path / "out")("a word")["input_ids"]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"sparsity": 1.5}, "sparsity 1.5 is out of range"),
    ({"sparsity": "4:2"}, "N:M needs 0 < N < M"),
    ({"sparsity": "block:4x4"}, "not allowed"),
    ({"method": "taylor"}, "method 'taylor' is not allowed"),
    ({"allocation": "erk"}, "allocation 'erk' is not allowed"),
    ({"allocation": "owl", "sparsity": "2:4"}, "allocation 'owl' needs an unstructured sparsity"),
])
def test_bad_arguments(checkpoint, calibration, tmp_path, kwargs, match):
    with pytest.raises(PruningError, match=match):
        sc.llm.prune(checkpoint, tmp_path / "out", calibration=calibration, **kwargs)


def test_out_dir_may_not_be_the_checkpoint(checkpoint):
    with pytest.raises(PruningError, match="is the checkpoint itself"):
        sc.llm.prune(checkpoint, checkpoint, method="magnitude")
