"""ModelSession refuses, at load and in one line naming the file and the field, an ONNX file whose Mimic
metadata is missing, not a number or at odds with its graph, and a training checkpoint given in its place."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from engine.errors import ModelLoadError
from engine.session import ModelSession


def edited(src: Path, dst: Path, fixed_batch: bool = False, **changes: str | None) -> Path:
    """A copy of `src` with metadata keys changed (None: removed), the graph's batch fixed at 1 if asked."""
    import onnx

    model = onnx.load(src)
    meta = {p.key: p.value for p in model.metadata_props}
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, meta)
    if fixed_batch:
        model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(model, dst)
    return dst


@pytest.mark.parametrize("changes,needle", [
    ({"hidden": None}, "without `hidden` in its metadata"),
    ({"state_rows": None}, "without `state_rows` in its metadata"),
    ({"hidden": "abc"}, "hidden='abc' is not a positive integer"),
    ({"hidden": "0"}, "hidden='0' is not a positive integer"),
    ({"state_rows": "-1"}, "state_rows='-1' is not a positive integer"),
    ({"vocab": "2.5"}, "vocab='2.5' is not a positive integer"),
    ({"hidden": "64"}, "metadata hidden=64, but the graph's `state_in` has 48"),
    ({"state_rows": "3"}, "metadata state_rows=3, but the graph's `state_in` has 1"),
    ({"vocab": "300"}, "metadata vocab=300, but the graph's `logits` has 256"),
    ({"darknet_rand_skip": "many"}, "darknet_rand_skip='many' is not a whole number"),
    ({"darknet_cutoff": "nan"}, "darknet_cutoff='nan' is not a probability"),
])
def test_bad_metadata_is_a_load_error_naming_file_and_field(tiny_model: Path, tmp_path: Path, changes: dict,
                                                          needle: str) -> None:
    path = edited(tiny_model, tmp_path / "edited.onnx", **changes)
    with pytest.raises(ModelLoadError) as info:
        ModelSession(path)
    message = str(info.value)
    assert needle in message and str(path) in message and "\n" not in message


def test_a_graph_that_cannot_run_as_the_contract_says_fails_at_load(tiny_model: Path, tmp_path: Path) -> None:
    """Metadata and static shapes agree, but the graph takes one sequence at a time: found by the test run."""
    path = edited(tiny_model, tmp_path / "batch1.onnx", fixed_batch=True)
    with pytest.raises(ModelLoadError, match="does not run in ONNX Runtime") as info:
        ModelSession(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_vocab_still_means_bytes(tiny_model: Path, tmp_path: Path) -> None:
    assert ModelSession(edited(tiny_model, tmp_path / "novocab.onnx", vocab=None)).vocab == 256


def test_a_checkpoint_given_as_the_model_says_to_export_it(tmp_path: Path) -> None:
    ckpt = tmp_path / "last.ckpt"  # a zip, as torch.save writes: recognised by its first bytes, not its name
    with zipfile.ZipFile(ckpt, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    with pytest.raises(ModelLoadError, match="looks like a Mimic checkpoint") as info:
        ModelSession(ckpt)
    assert f"mimic export {ckpt} OUT.onnx" in str(info.value)
    garbage = tmp_path / "damaged.pt"  # only the name says checkpoint: the ONNX error, then the hint
    garbage.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ModelLoadError, match="not a valid ONNX model .*if it is a Mimic checkpoint, run `mimic "
                                             "export"):
        ModelSession(garbage)
