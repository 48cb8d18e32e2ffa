from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from engine.session import ModelSession
from export.errors import ExportError, ParityError
from export.onnx_export import export_checkpoint, export_model, model_metadata
from training.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from training.models import ModelConfig, build_model
from training.trainer import TrainConfig, train

ARCHS = [("gru", 2, True), ("lstm", 2, True), ("darknet-rnn", 3, True), ("darknet-rnn", 2, False)]


def _trained_ish(cfg: ModelConfig, tmp_path: Path) -> torch.nn.Module:
    """A briefly trained model: real batch-norm statistics, weights moved off their initial values."""
    text = ("Now is the winter of our discontent made glorious summer. " * 40).encode()
    result = train(text, cfg, TrainConfig(steps=25, batch_size=4, seq_len=16, threads=1, eval_every=0,
                                          checkpoint_every=0), tmp_path / "train")
    return model_from_checkpoint(load_checkpoint(result.checkpoint))[0]


@pytest.mark.parametrize("arch,layers,bn", ARCHS)
def test_export_matches_torch_for_prompt_and_step_shapes(tmp_path: Path, arch: str, layers: int, bn: bool) -> None:
    cfg = ModelConfig(arch=arch, hidden=24, layers=layers, batch_norm=bn)
    model = _trained_ish(cfg, tmp_path)
    report = export_model(model, cfg, tmp_path / "m.onnx", model_metadata(cfg))
    assert report.max_abs_diff <= 1e-4
    session = ModelSession(report.path)
    for batch, time in [(1, 1), (4, 33)]:  # dynamic axes: any batch, any time
        tokens = np.random.default_rng(1).integers(0, 256, (batch, time))
        state = np.random.default_rng(2).standard_normal((cfg.state_rows, batch, 24)).astype(np.float32)
        logits, new_state = session.run(tokens, state)
        with torch.no_grad():
            want, want_state = model(torch.from_numpy(tokens), torch.from_numpy(state))
        assert np.abs(logits - want.numpy()).max() <= 1e-4
        assert np.abs(new_state - want_state.numpy()).max() <= 1e-4


def test_graph_has_the_serving_contract(tmp_path: Path) -> None:
    cfg = ModelConfig(hidden=8)
    path = export_model(build_model(cfg).eval(), cfg, tmp_path / "m.onnx", model_metadata(cfg, val_bpc="1.5")).path
    proto = onnx.load(path)
    ins = {i.name: i for i in proto.graph.input}
    outs = {o.name: o for o in proto.graph.output}
    assert set(ins) == {"tokens", "state_in"} and set(outs) == {"logits", "state_out"}
    assert ins["tokens"].type.tensor_type.elem_type == onnx.TensorProto.INT64
    dims = [d.dim_param for d in ins["tokens"].type.tensor_type.shape.dim]
    assert dims == ["batch", "time"]
    meta = {p.key: p.value for p in proto.metadata_props}
    for key in ("arch", "hidden", "layers", "vocab", "created", "mimic_version", "val_bpc"):
        assert key in meta


def test_a_wrong_graph_is_refused_and_nothing_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import export.onnx_export as ox

    cfg = ModelConfig(hidden=8)
    real_build = ox.build_onnx

    def broken(cfg_dict, weights, meta):
        weights = dict(weights)
        weights["head.bias"] = weights["head.bias"] + 0.01  # a subtle exporter bug
        return real_build(cfg_dict, weights, meta)

    monkeypatch.setattr(ox, "build_onnx", broken)
    with pytest.raises(ParityError, match="disagree"):
        export_model(build_model(cfg).eval(), cfg, tmp_path / "m.onnx", model_metadata(cfg))
    assert not (tmp_path / "m.onnx").exists()


def test_export_checkpoint_carries_corpus_facts(tmp_path: Path) -> None:
    cfg = ModelConfig(hidden=8)
    model = build_model(cfg)
    save_checkpoint(tmp_path / "c.pt", {"model_config": cfg.to_dict(), "model": model.state_dict(), "step": 7,
                                        "val_bpc": 2.5, "corpus": {"train_chars": 1234, "kind": "chat",
                                                                   "speakers": {"ann": 40}, "line_break": "\x1e"}})
    report = export_checkpoint(tmp_path / "c.pt", tmp_path / "out.onnx")
    session = ModelSession(report.path)
    assert session.metadata["train_chars"] == "1234" and session.metadata["val_bpc"] == "2.5000"
    assert session.meta_json("speakers") == {"ann": 40}
    assert session.metadata["line_break"] == "\x1e"


def test_export_wants_an_onnx_name(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=".onnx"):
        export_checkpoint(tmp_path / "c.pt", tmp_path / "out.bin")
