import pytest
import torch

from training.models import ModelConfig, build_model, initial_state


@pytest.mark.parametrize("arch,layers", [("gru", 2), ("lstm", 2), ("darknet-rnn", 3)])
def test_shapes_and_state_contract(arch: str, layers: int) -> None:
    cfg = ModelConfig(arch=arch, hidden=16, layers=layers)
    model = build_model(cfg).eval()
    tokens = torch.randint(0, 256, (3, 7))
    logits, state = model(tokens, initial_state(cfg, 3))
    assert logits.shape == (3, 7, 256)
    assert state.shape == (cfg.state_rows, 3, 16)
    assert cfg.state_rows == (2 * layers if arch == "lstm" else layers)


@pytest.mark.parametrize("arch", ["gru", "lstm", "darknet-rnn"])
def test_one_call_equals_step_by_step(arch: str) -> None:
    """The prompt shape and the one-step shape compute the same thing: the state carries everything."""
    cfg = ModelConfig(arch=arch, hidden=16, layers=2)
    model = build_model(cfg).eval()
    tokens = torch.randint(0, 256, (2, 9))
    with torch.no_grad():
        whole, s_whole = model(tokens, initial_state(cfg, 2))
        state, steps = initial_state(cfg, 2), []
        for t in range(9):
            out, state = model(tokens[:, t:t + 1], state)
            steps.append(out)
    assert torch.allclose(whole, torch.cat(steps, 1), atol=1e-5)
    assert torch.allclose(s_whole, state, atol=1e-5)


def test_darknet_rnn_is_three_modules_of_three_connected_layers() -> None:
    model = build_model(ModelConfig(arch="darknet-rnn", hidden=8, layers=3))
    assert len(model.rnns) == 3
    for i, rnn in enumerate(model.rnns):
        assert rnn.input_layer.weight.shape == (8, 256 if i == 0 else 8)
        assert rnn.self_layer.weight.shape == (8, 8)
        assert rnn.output_layer.weight.shape == (8, 8)
    assert model.head.weight.shape == (256, 8)


def test_darknet_batch_norm_uses_rolling_statistics_at_inference() -> None:
    cfg = ModelConfig(arch="darknet-rnn", hidden=8, layers=1)
    model = build_model(cfg).train()
    before = model.rnns[0].input_layer.bn.rolling_mean.clone()
    model(torch.randint(0, 256, (16, 4)), initial_state(cfg, 16))
    assert not torch.equal(before, model.rnns[0].input_layer.bn.rolling_mean)
    model.eval()
    bn = model.rnns[0].self_layer.bn
    z = torch.randn(5, 8)
    want = (z - bn.rolling_mean) / (bn.rolling_variance.sqrt() + 1e-6) * bn.scales + bn.biases
    assert torch.allclose(bn(z), want)


@pytest.mark.parametrize("bad", [{"arch": "transformer"}, {"hidden": 0}, {"dropout": 1.5}, {"activation": "gelu"}])
def test_bad_config_is_rejected(bad: dict) -> None:
    with pytest.raises(ValueError):
        ModelConfig(**bad)


@pytest.mark.parametrize("arch", ["gru", "lstm"])
def test_speaker_conditioned_one_call_equals_step_by_step(arch: str) -> None:
    cfg = ModelConfig(arch=arch, hidden=16, layers=2, speaker_slots=5)
    model = build_model(cfg).eval()
    torch.nn.init.normal_(model.speaker.weight)
    tokens, speakers = torch.randint(0, 256, (2, 9)), torch.randint(0, 5, (2, 9))
    with torch.no_grad():
        whole, s_whole = model(tokens, initial_state(cfg, 2), speakers)
        state, steps = initial_state(cfg, 2), []
        for t in range(9):
            out, state = model(tokens[:, t:t + 1], state, speakers[:, t:t + 1])
            steps.append(out)
    assert torch.allclose(whole, torch.cat(steps, 1), atol=1e-5)
    assert torch.allclose(s_whole, state, atol=1e-5)
