"""export/darknet.py: Darknet .cfg/.weights in and out, checked against a test-side Darknet (darknet_reference)."""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.session import ModelSession
from export.darknet import (
    darknet_metadata,
    expected_weights_size,
    export_checkpoint_to_darknet,
    export_darknet,
    load_darknet,
    parse_cfg,
    parse_cfg_text,
    rand_draws_at_load,
    read_weights,
    to_onnx_bytes,
    write_darknet,
)
from export.errors import BadConfigError, BadWeightsError, ExportError
from tests.export.darknet_reference import cfg_for, forward, pack_weights, random_net
from training.checkpoint import save_checkpoint
from training.models import DarknetRNN, ModelConfig, build_model, initial_state

# Darknet's published cfg/rnn.cfg, verbatim (spaces around '=' included).
RNN_CFG = """[net]
subdivisions=1
inputs=256
batch = 1
momentum=0.9
decay=0.001
max_batches = 2000
time_steps=1
learning_rate=0.1
policy=steps
steps=1000,1500
scales=.1,.1

[rnn]
batch_normalize=1
output = 1024
hidden=1024
activation=leaky

[rnn]
batch_normalize=1
output = 1024
hidden=1024
activation=leaky

[rnn]
batch_normalize=1
output = 1024
hidden=1024
activation=leaky

[connected]
output=256
activation=leaky

[softmax]

"""

TOKENS = list(b"JON SNOW knows nothing.\n\x00\xff\x80")


def write_pair(tmp_path: Path, net, name: str = "m", **header) -> tuple[Path, Path]:
    cfg, weights = tmp_path / f"{name}.cfg", tmp_path / f"{name}.weights"
    cfg.write_text(cfg_for(net))
    weights.write_bytes(pack_weights(net, **header))
    return cfg, weights


def torch_model(config: dict, weights: dict[str, np.ndarray]) -> DarknetRNN:
    model = DarknetRNN(ModelConfig.from_dict(config))
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    return model.eval()


# ----------------------------------------------------------------------------------------- sizes


def test_published_rnn_cfg_makes_a_35_800_084_byte_weights_file() -> None:
    cfg = parse_cfg_text(RNN_CFG, "rnn.cfg")
    assert expected_weights_size(cfg) == 35_800_084
    assert rand_draws_at_load(cfg) == 8_912_896  # one rand() per weight before the file is loaded
    assert cfg.model_config() == {"arch": "darknet-rnn", "hidden": 1024, "layers": 3, "dropout": 0.0, "vocab": 256,
                                  "batch_norm": True, "activation": "leaky", "final_activation": "leaky",
                                  "shortcut": False, "head_batch_norm": False}
    small = parse_cfg_text(RNN_CFG.replace("1024", "64"), "rnn64.cfg")
    assert expected_weights_size(small) == 272_404  # 20 + 4 * 68,096


def test_training_cfg_has_the_same_layout() -> None:
    train = RNN_CFG.replace("batch = 1", "batch = 128").replace("time_steps=1", "time_steps=576")
    assert expected_weights_size(parse_cfg_text(train)) == 35_800_084


# -------------------------------------------------------------------------------------- reading


@pytest.mark.parametrize("layers,bn,act,final,head_bn", [
    (3, True, "leaky", "leaky", False), (1, False, "leaky", "linear", False), (2, True, "logistic", "relu", False),
    (2, False, "tanh", "leaky", False), (2, True, "leaky", "leaky", True)])
def test_reader_reconstructs_tensors_written_by_an_independent_writer(tmp_path: Path, layers, bn, act, final,
                                                                       head_bn) -> None:
    net = random_net(hidden=12, layers=layers, bn=bn, activation=act, final_activation=final, seed=layers,
                     head_bn=head_bn)
    model = load_darknet(*write_pair(tmp_path, net, seen=123_456_789_012))
    want = net.state_dict()
    assert set(model.weights) == set(want)
    for key, value in want.items():
        assert model.weights[key].dtype == np.float32
        np.testing.assert_array_equal(model.weights[key], value, err_msg=key)
    assert model.header.seen == 123_456_789_012 and (model.header.major, model.header.minor) == (0, 2)
    assert model.config == {"arch": "darknet-rnn", "hidden": 12, "layers": layers, "dropout": 0.0, "vocab": 256,
                            "batch_norm": bn, "activation": act, "final_activation": final, "shortcut": False,
                            "head_batch_norm": head_bn}


@pytest.mark.parametrize("major,minor,seen_bytes,transposed", [(0, 1, 4, False), (0, 2, 8, False),
                                                               (1, 0, 8, False), (0, 1001, 4, True)])
def test_header_versions_old_seen_and_transposed_files(tmp_path: Path, major, minor, seen_bytes, transposed) -> None:
    net = random_net(hidden=8, layers=2, seed=5)
    cfg, weights = write_pair(tmp_path, net, seen=77, major=major, minor=minor, revision=3)
    assert weights.stat().st_size == 12 + seen_bytes + 4 * sum(a.size for a in _all_arrays(net))
    model = load_darknet(cfg, weights)
    assert (model.header.seen, model.header.transposed, model.header.revision) == (77, transposed, 3)
    for key, value in net.state_dict().items():
        np.testing.assert_array_equal(model.weights[key], value, err_msg=key)


def _all_arrays(net):
    return [a for c in [c for subs in net.rnns for c in subs] + [net.head] for a in c.blocks()]


def test_hidden_is_ignored_like_darknet_does(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="export.darknet"):
        cfg = parse_cfg_text(RNN_CFG.replace("hidden=1024", "hidden=7"), "odd.cfg")
    assert cfg.hidden == 1024
    assert "hidden=7 is ignored" in caplog.text


def test_a_trailing_cost_layer_is_read_and_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Older copies of rnn.cfg end with [cost] type=sse: no weights, and Darknet's output skips it."""
    with caplog.at_level(logging.INFO, logger="export.darknet"):
        cfg = parse_cfg_text(RNN_CFG + "[cost]\ntype=sse\nscale=1\n", "old-rnn.cfg")
    assert cfg == parse_cfg_text(RNN_CFG, "old-rnn.cfg")
    assert "section 6 [cost] is ignored" in caplog.text
    plain, weights = write_pair(tmp_path, random_net(hidden=16, layers=2), seen=7)
    costed = tmp_path / "costed.cfg"
    costed.write_text(plain.read_text() + "\n[cost]\ntype=sse\n")
    a, b = load_darknet(plain, weights), load_darknet(costed, weights)
    assert a.config == b.config and a.weights.keys() == b.weights.keys()
    assert all(np.array_equal(a.weights[k], b.weights[k]) for k in a.weights)


def test_default_activation_is_logistic_and_aliases_are_accepted() -> None:
    text = "[network]\ninputs=256\n# comment\n; another\n[rnn]\noutput=8\n[conn]\noutput=256\n[soft]\ntemperature=.5\n"
    cfg = parse_cfg_text(text)
    assert (cfg.activation, cfg.final_activation, cfg.batch_norm, cfg.softmax_temperature) == \
        ("logistic", "logistic", False, 0.5)


# -------------------------------------------------------------------------------------- writing


def test_writer_produces_the_same_bytes_as_the_independent_writer(tmp_path: Path) -> None:
    net = random_net(hidden=10, layers=3, seed=9)
    config = {"arch": "darknet-rnn", "hidden": 10, "layers": 3, "vocab": 256, "batch_norm": True,
              "activation": "leaky", "final_activation": "leaky"}
    cfg, weights = write_darknet(tmp_path / "w.cfg", tmp_path / "w.weights", config, net.state_dict(), seen=4242)
    assert weights.read_bytes() == pack_weights(net, seen=4242)
    assert parse_cfg(cfg).model_config() == {**config, "dropout": 0.0, "shortcut": False, "head_batch_norm": False}
    text = cfg.read_text()
    assert "batch=1" in text and "time_steps=1" in text and text.count("[rnn]") == 3


def test_writer_refuses_what_darknet_cannot_run(tmp_path: Path) -> None:
    net = random_net(hidden=4, layers=1, seed=1)
    with pytest.raises(ExportError, match="only a darknet-rnn"):
        write_darknet(tmp_path / "a.cfg", tmp_path / "a.weights", {"arch": "gru", "hidden": 4, "layers": 1,
                                                                     "batch_norm": True}, net.state_dict())
    bad = dict(net.state_dict())
    bad["head.bias"] = bad["head.bias"][:-1]
    with pytest.raises(ExportError, match=r"head.bias has shape \(255,\), expected \(256,\)"):
        write_darknet(tmp_path / "a.cfg", tmp_path / "a.weights", {"arch": "darknet-rnn", "hidden": 4, "layers": 1,
                                                                     "batch_norm": True}, bad)


# ------------------------------------------------------------------------------ errors: weights


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    return write_pair(tmp_path, random_net(hidden=8, layers=2, seed=3))


def test_truncated_file_names_expected_and_actual_sizes(pair) -> None:
    cfg, weights = pair
    size = weights.stat().st_size
    weights.write_bytes(weights.read_bytes()[:-6])
    with pytest.raises(BadWeightsError) as err:
        load_darknet(cfg, weights)
    msg = str(err.value)
    assert f"{size - 6:,} bytes" in msg and f"needs {size:,} bytes" in msg and "truncated" in msg
    assert str(weights) in msg and "\n" not in msg


def test_oversized_file_names_expected_and_actual_sizes(pair) -> None:
    cfg, weights = pair
    size = weights.stat().st_size
    weights.write_bytes(weights.read_bytes() + b"\0" * 8)
    with pytest.raises(BadWeightsError, match=f"is {size + 8:,} bytes but .* needs only {size:,} bytes: 8 trailing"):
        load_darknet(cfg, weights)


def test_weights_for_another_cfg_point_at_the_size_that_fits(tmp_path: Path) -> None:
    cfg, _ = write_pair(tmp_path, random_net(hidden=8, layers=2, seed=3), name="small")
    _, weights = write_pair(tmp_path, random_net(hidden=16, layers=2, seed=3), name="big")
    with pytest.raises(BadWeightsError, match=r"needs only [\d,]+ bytes.*fits output=16: is the cfg right"):
        load_darknet(cfg, weights)


def test_header_only_and_missing_files(pair, tmp_path: Path) -> None:
    cfg, weights = pair
    weights.write_bytes(struct.pack("<3i", 0, 2, 0))
    with pytest.raises(BadWeightsError, match="12 bytes, too short for a Darknet .weights header"):
        load_darknet(cfg, weights)
    with pytest.raises(BadWeightsError, match="no such Darknet .weights file"):
        load_darknet(cfg, tmp_path / "nope.weights")
    with pytest.raises(BadConfigError, match="no such Darknet .cfg file"):
        load_darknet(tmp_path / "nope.cfg", weights)


def test_weights_given_as_the_cfg_is_a_clear_error(pair) -> None:
    cfg, weights = pair
    with pytest.raises(BadConfigError, match="binary data, not a Darknet .cfg"):
        load_darknet(weights, cfg)


# -------------------------------------------------------------------------------- errors: cfg


BAD_CFGS = [
    (RNN_CFG.replace("[connected]", "[convolutional]"), r"section 4 \[convolutional\]: layer type"),
    (RNN_CFG + "[cost]\ntype=sse\nnoobject=1\n", r"section 6 \[cost\]: option 'noobject' is not supported"),
    (RNN_CFG.replace("[softmax]\n", "[cost]\n[softmax]\n"), r"\[connected\] \+ \[cost\] \+ \[softmax\]; Mimic"),
    (RNN_CFG + "[cost]\n[cost]\n", r"\[softmax\] \+ \[cost\] \+ \[cost\]; Mimic runs"),
    (RNN_CFG.replace("activation=leaky\n\n[connected]", "activation=leaky\nlogistic=1\n\n[connected]"),
     r"section 3 \[rnn\]: option 'logistic' is not supported"),
    (RNN_CFG.replace("output=256\n", "output=256\ndropout=.5\n"), r"section 4 \[connected\]: option 'dropout'"),
    (RNN_CFG.replace("scales=.1,.1", "scales=.1,.1\nwidht=3"), r"section 0 \[net\]: option 'widht'"),
    (RNN_CFG.replace("[softmax]\n", "[softmax]\ntree=x.tree\n"), r"section 5 \[softmax\]: option 'tree'"),
    (RNN_CFG.replace("hidden=1024\nactivation=leaky\n\n[rnn]", "hidden=1024\nactivation=leaky\nshortcut=1\n\n[rnn]",
                     1), r"section 2 \[rnn\]: output/activation/batch_normalize/shortcut .* differ from the first"),
    (RNN_CFG.replace("activation=leaky\n\n[connected]", "activation=elu\n\n[connected]"),
     r"section 3 \[rnn\]: activation='elu' is not supported by Mimic"),
    (RNN_CFG.replace("output=256\nactivation=leaky", "output=256\nactivation=swishy"),
     r"section 4 \[connected\]: activation='swishy' is not a Darknet activation"),
    (RNN_CFG.replace("output = 1024", "output = 512", 1), r"section 2 \[rnn\].*differ from the first"),
    (RNN_CFG.replace("output=256", "output=255"), r"section 4 \[connected\]: output=255"),
    (RNN_CFG.replace("inputs=256", "inputs=128"), r"section 0 \[net\]: inputs=128"),
    (RNN_CFG.replace("output = 1024", "output = lots", 1), r"section 1 \[rnn\]: output='lots' is not a whole"),
    (RNN_CFG.replace("[softmax]\n", ""), r"\[rnn\] \+ \[rnn\] \+ \[rnn\] \+ \[connected\]; Mimic runs"),
    (RNN_CFG.replace("[net]", "[rnn]", 1), r"first section must be \[net\]"),
    ("inputs=256\n[net]\n", r"line 1 sets 'inputs' before any \[section\]"),
    (RNN_CFG.replace("policy=steps", "policy steps"), r"line 10 \('policy steps'\) is not a key=value"),
    (RNN_CFG + "[net]\n", r"section 6 \[net\]: a second \[net\]"),
]


@pytest.mark.parametrize("text,pattern", BAD_CFGS)
def test_unsupported_cfgs_are_one_line_errors_naming_section_and_option(text: str, pattern: str) -> None:
    with pytest.raises(BadConfigError, match=pattern) as err:
        parse_cfg_text(text, "bad.cfg")
    assert str(err.value).startswith("bad.cfg: ") and "\n" not in str(err.value)


# ------------------------------------------------------- the forward pass: torch, ONNX, reference


@pytest.mark.parametrize("layers,bn,act,final,shortcut,head_bn", [
    (3, True, "leaky", "leaky", False, False), (2, False, "leaky", "linear", False, False),
    (2, True, "tanh", "logistic", False, False), (1, True, "relu", "leaky", False, False),
    (3, True, "leaky", "leaky", True, False), (2, False, "tanh", "linear", True, False),
    (2, True, "leaky", "leaky", False, True)])
def test_torch_onnx_and_reference_agree_on_weights_read_from_darknet_files(tmp_path: Path, layers, bn, act,
                                                                           final, shortcut, head_bn) -> None:
    """shortcut=1 ([rnn] h_t = h_(t-1) + a + b) and batch_normalize=1 on the [connected] too, which
    cfg/rnn.cfg does not use. A shortcut state is a running sum, so its weights are drawn smaller: the same
    tolerances then hold over the whole prompt."""
    net = random_net(hidden=16, layers=layers, bn=bn, activation=act, final_activation=final, seed=11,
                     shortcut=shortcut, gain=0.5 if shortcut else 1.0, head_bn=head_bn)
    model = load_darknet(*write_pair(tmp_path, net))
    assert model.config["shortcut"] is shortcut
    want, want_h = forward(net, TOKENS)
    want = np.stack(want)  # (T, 256)

    with torch.no_grad():
        logits, state = torch_model(model.config, model.weights)(torch.tensor([TOKENS]), torch.zeros(layers, 1, 16))
    np.testing.assert_allclose(logits[0].numpy(), want, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(state[:, 0].numpy(), np.stack(want_h), atol=1e-4, rtol=1e-4)

    session = ModelSession(to_onnx_bytes(model))
    got, got_state = session.run(np.array([TOKENS]), session.initial_state(1))
    np.testing.assert_allclose(got[0], want, atol=1e-4, rtol=1e-4)
    # one byte at a time, as `rnn generate` feeds the seed, gives the same as the whole prompt at once
    state = session.initial_state(1)
    for t, c in enumerate(TOKENS):
        step, state = session.run(np.array([[c]]), state)
        np.testing.assert_allclose(step[0, 0], want[t], atol=1e-4, rtol=1e-4)


def test_batch_norm_adds_eps_to_the_std_not_the_variance(tmp_path: Path) -> None:
    """With a tiny rolling variance, sqrt(v) + 1e-6 and sqrt(v + 1e-6) differ a hundredfold."""
    net = random_net(hidden=8, layers=1, seed=2)
    for c in net.rnns[0]:
        c.rolling_variance[:] = 1e-10
        c.scales[:] = 1e-5  # keeps the normalised values moderate
    model = load_darknet(*write_pair(tmp_path, net))
    want = np.stack(forward(net, TOKENS[:6])[0])
    with torch.no_grad():
        got = torch_model(model.config, model.weights)(torch.tensor([TOKENS[:6]]), torch.zeros(1, 1, 8))[0][0]
    np.testing.assert_allclose(got.numpy(), want, atol=1e-4, rtol=1e-4)
    session = ModelSession(to_onnx_bytes(model))
    np.testing.assert_allclose(session.run(np.array([TOKENS[:6]]), session.initial_state(1))[0][0], want,
                               atol=1e-4, rtol=1e-4)


def test_export_writes_parity_checked_onnx_with_darknet_metadata(tmp_path: Path) -> None:
    net = random_net(hidden=16, layers=3, seed=4)
    cfg, weights = write_pair(tmp_path, net, seen=1_000_000)
    report = export_darknet(cfg, weights, tmp_path / "out.onnx")
    assert report.max_abs_diff <= 1e-4
    session = ModelSession(report.path)
    meta = session.metadata
    assert meta["source"] == "darknet" and meta["arch"] == "darknet-rnn" and meta["seen"] == "1000000"
    assert meta["darknet_cutoff"] == "0.0001" and meta["darknet_version"] == "0.2.0"
    assert meta["darknet_rand_skip"] == str(256 * 16 + 8 * 16 * 16 + 16 * 256)
    assert (meta["hidden"], meta["layers"], meta["darknet_cfg"], meta["darknet_weights"]) == ("16", "3", "m.cfg",
                                                                                               "m.weights")
    got = session.run(np.array([TOKENS]), session.initial_state(1))[0][0]
    np.testing.assert_allclose(got, np.stack(forward(net, TOKENS)[0]), atol=1e-4, rtol=1e-4)


def test_darknet_metadata_keeps_the_engine_contract(tmp_path: Path) -> None:
    from engine.session import SUPPORTED_FORMATS

    model = load_darknet(*write_pair(tmp_path, random_net(hidden=8, layers=2)))
    meta = darknet_metadata(model)
    assert meta["mimic_format"] in SUPPORTED_FORMATS
    assert (meta["arch"], meta["hidden"], meta["layers"], meta["state_rows"]) == ("darknet-rnn", "8", "2", "2")


# ------------------------------------------------------------------ round trip: Mimic -> Darknet -> Mimic


def _checkpoint(tmp_path: Path, cfg: ModelConfig) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = build_model(cfg).train()
    with torch.no_grad():  # non-trivial batch-norm statistics, as after training
        model(torch.randint(0, 256, (8, 12)), initial_state(cfg, 8))
    model.eval()
    path = save_checkpoint(tmp_path / "c.pt", {"model_config": cfg.to_dict(), "model": model.state_dict(),
                                               "step": 10, "train_config": {"batch_size": 4, "seq_len": 32},
                                               "world_size": 2})
    return path, model


@pytest.mark.parametrize("bn,shortcut,head_bn", [(True, False, False), (False, False, False), (True, True, False),
                                                (True, False, True)])
def test_round_trip_checkpoint_to_darknet_and_back_gives_identical_logits(tmp_path: Path, bn: bool,
                                                                          shortcut: bool, head_bn: bool) -> None:
    cfg = ModelConfig(arch="darknet-rnn", hidden=12, layers=2, batch_norm=bn, final_activation="linear",
                      shortcut=shortcut, head_batch_norm=head_bn)
    ckpt, model = _checkpoint(tmp_path, cfg)
    files = export_checkpoint_to_darknet(ckpt, tmp_path / "out" / "mimic.weights")
    assert files.cfg_path == tmp_path / "out" / "mimic.cfg" and files.seen == 10 * 4 * 32 * 2
    back = load_darknet(files.cfg_path, files.weights_path)
    assert ModelConfig.from_dict(back.config) == cfg
    tokens, state = torch.tensor([TOKENS]), torch.randn(2, 1, 12)
    with torch.no_grad():
        want, want_state = model(tokens, state)
        got, got_state = torch_model(back.config, back.weights)(tokens, state)
    assert torch.equal(got, want) and torch.equal(got_state, want_state)  # bit for bit
    # and the same net through our independent struct.pack layout
    assert files.weights_path.read_bytes()[:20] == struct.pack("<3iQ", 0, 2, 0, files.seen)


def test_only_darknet_rnn_checkpoints_become_darknet_files(tmp_path: Path) -> None:
    ckpt, _ = _checkpoint(tmp_path, ModelConfig(arch="gru", hidden=8))
    with pytest.raises(ExportError, match="a gru model; only darknet-rnn checkpoints"):
        export_checkpoint_to_darknet(ckpt, tmp_path / "x.weights")
    assert not (tmp_path / "x.weights").exists() and not (tmp_path / "x.cfg").exists()


def test_read_weights_works_on_bytes_without_files() -> None:
    net = random_net(hidden=6, layers=1, seed=8)
    weights, header = read_weights(pack_weights(net, seen=5), parse_cfg_text(cfg_for(net)))
    assert header.seen == 5 and np.array_equal(weights["head.weight"], net.head.weights)
