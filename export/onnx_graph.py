"""Build the one ONNX graph Mimic serves, from a model config and numpy weights (no torch needed).

Contract (what engine/session.py expects):
    inputs   tokens    int64   (batch, time)
             state_in  float32 (S, batch, H)
    outputs  logits    float32 (batch, time, 256)
             state_out float32 (S, batch, H)
Batch and time are dynamic, so one graph serves a whole prompt and single generation steps.

Weights arrive as a dict named like the PyTorch state_dict of training/models.py, which is also what
export/darknet.py produces from Darknet files. The graph is written with ONNX's own recurrent ops (GRU,
LSTM) and a Scan for the Darknet RNN, by hand rather than through torch.onnx: we control the gate order
and the state layout, and the parity check proves the result.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
LEAKY_SLOPE = 0.1
BN_INFER_EPS = 1e-6


class _Graph:
    """A small accumulator of nodes and initializers with unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def const(self, hint: str, value: np.ndarray) -> str:
        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.array(value, order="C"), name))
        return name

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, **attrs) -> list[str]:
        outs = [self.name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, **attrs))
        return outs

    def op1(self, op_type: str, inputs: list[str], **attrs) -> str:
        return self.op(op_type, inputs, 1, **attrs)[0]


def _activation(g: _Graph, x: str, kind: str) -> str:
    if kind == "leaky":
        return g.op1("LeakyRelu", [x], alpha=LEAKY_SLOPE)
    if kind == "linear":
        return x
    return g.op1({"relu": "Relu", "tanh": "Tanh", "logistic": "Sigmoid"}[kind], [x])


def _affine(w: dict[str, np.ndarray], prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """Fold a Darknet connected layer's bias or inference batch norm into y = z * k + c."""
    if f"{prefix}.bn.scales" in w:
        scales, biases = w[f"{prefix}.bn.scales"], w[f"{prefix}.bn.biases"]
        mean, var = w[f"{prefix}.bn.rolling_mean"], w[f"{prefix}.bn.rolling_variance"]
        k = scales / (np.sqrt(var) + BN_INFER_EPS)
        return k.astype(np.float32), (biases - mean * k).astype(np.float32)
    bias = w[f"{prefix}.bias"]
    return np.ones_like(bias, dtype=np.float32), bias.astype(np.float32)


def _connected(g: _Graph, x: str, w: dict, prefix: str, activation: str, one_hot: bool = False) -> str:
    weight = w[f"{prefix}.weight"].astype(np.float32)  # (out, in), Darknet's row-major layout
    k, c = _affine(w, prefix)
    if one_hot:
        z = g.op1("Gather", [g.const("w_in_t", weight.T), x])  # column `token` of W
    else:
        z = g.op1("MatMul", [x, g.const("w_t", weight.T)])
    if not np.all(k == 1.0):
        z = g.op1("Mul", [z, g.const("bn_k", k)])
    z = g.op1("Add", [z, g.const("bias", c)])
    return _activation(g, z, activation)


def _darknet_body(g: _Graph, x: str, state_in: str, cfg: dict, w: dict) -> tuple[str, list[str]]:
    """Darknet RNN modules; x is (T, B) tokens, time-major. Returns (T, B, H) outputs and per-layer states."""
    states = []
    for i in range(cfg["layers"]):
        p = f"rnns.{i}"
        a = _connected(g, x, w, f"{p}.input_layer", cfg["activation"], one_hot=(i == 0))  # (T, B, H)
        h0 = g.op1("Gather", [state_in, g.const("idx", np.array(i, dtype=np.int64))])  # (B, H)
        body = _Graph()
        body._n = g._n + 10_000 * (i + 1)  # keep names unique across the outer graph and its subgraphs
        b = _connected(body, "h_prev", w, f"{p}.self_layer", cfg["activation"])
        h_new = body.op1("Add", ["a_t", b])
        body.nodes.append(helper.make_node("Identity", [h_new], ["h_next"]))
        body.nodes.append(helper.make_node("Identity", [h_new], ["h_scan"]))
        f = onnx.TensorProto.FLOAT
        body_graph = helper.make_graph(
            body.nodes, f"darknet_rnn_{i}",
            [helper.make_tensor_value_info("h_prev", f, None), helper.make_tensor_value_info("a_t", f, None)],
            [helper.make_tensor_value_info("h_next", f, None), helper.make_tensor_value_info("h_scan", f, None)],
            initializer=body.inits,
        )
        h_last, hs = g.op("Scan", [h0, a], 2, num_scan_inputs=1, body=body_graph)  # hs: (T, B, H)
        x = _connected(g, hs, w, f"{p}.output_layer", cfg["activation"])
        states.append(g.op1("Unsqueeze", [h_last, g.const("axes", np.array([0], dtype=np.int64))]))
    return x, states


GRU_ORDER = (1, 0, 2)  # torch r, z, n  ->  ONNX z, r, h
LSTM_ORDER = (0, 3, 1, 2)  # torch i, f, g, o  ->  ONNX i, o, f, c


def _reorder(a: np.ndarray, order: tuple[int, ...]) -> np.ndarray:
    return np.concatenate([np.split(a, len(order))[j] for j in order])


def _torch_rnn_body(g: _Graph, x: str, state_in: str, cfg: dict, w: dict) -> tuple[str, list[str]]:
    """GRU or LSTM stack; x is (T, B) tokens. Returns (T, B, H) outputs and the state rows in order."""
    lstm, n_layers, hidden = cfg["arch"] == "lstm", cfg["layers"], cfg["hidden"]
    order = LSTM_ORDER if lstm else GRU_ORDER
    y = g.op1("Gather", [g.const("embed", w["embed.weight"].astype(np.float32)), x])  # (T, B, H)
    h_rows, c_rows = [], []
    for i in range(n_layers):
        W = _reorder(w[f"rnn.weight_ih_l{i}"], order)[None]
        R = _reorder(w[f"rnn.weight_hh_l{i}"], order)[None]
        B = np.concatenate([_reorder(w[f"rnn.bias_ih_l{i}"], order), _reorder(w[f"rnn.bias_hh_l{i}"], order)])[None]
        h0 = g.op1("Slice", [state_in, g.const("s", np.array([i], np.int64)), g.const("e", np.array([i + 1], np.int64))])
        ins = [y, g.const("W", W.astype(np.float32)), g.const("R", R.astype(np.float32)),
               g.const("B", B.astype(np.float32)), "", h0]
        if lstm:
            j = n_layers + i
            ins.append(g.op1("Slice", [state_in, g.const("s", np.array([j], np.int64)),
                                       g.const("e", np.array([j + 1], np.int64))]))
            y4, h, c = g.op("LSTM", ins, 3, hidden_size=hidden)
            c_rows.append(c)
        else:
            y4, h = g.op("GRU", ins, 2, hidden_size=hidden, linear_before_reset=1)
        h_rows.append(h)
        y = g.op1("Squeeze", [y4, g.const("axes", np.array([1], dtype=np.int64))])  # (T, 1, B, H) -> (T, B, H)
    return y, h_rows + c_rows


def build_onnx(cfg: dict, weights: dict[str, np.ndarray], metadata: dict[str, str]) -> onnx.ModelProto:
    """Return the serving graph for `cfg` (a ModelConfig as a dict) with `weights` and `metadata` baked in."""
    g = _Graph()
    x = g.op1("Transpose", ["tokens"], perm=[1, 0])  # (B, T) -> (T, B): recurrent ops are time-major
    if cfg["arch"] == "darknet-rnn":
        y, rows = _darknet_body(g, x, "state_in", cfg, weights)
        head_act = cfg.get("final_activation", "leaky")
    else:
        y, rows = _torch_rnn_body(g, x, "state_in", cfg, weights)
        head_act = "linear"
    y = g.op1("Transpose", [y], perm=[1, 0, 2])  # (T, B, H) -> (B, T, H)
    logits = _connected(g, y, weights, "head", head_act)
    g.nodes.append(helper.make_node("Identity", [logits], ["logits"]))
    g.nodes.append(helper.make_node("Concat", rows, ["state_out"], axis=0))

    state_rows, hidden = len(rows), cfg["hidden"]
    graph = helper.make_graph(
        g.nodes, "mimic_char_rnn",
        [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["batch", "time"]),
         helper.make_tensor_value_info("state_in", TensorProto.FLOAT, [state_rows, "batch", hidden])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "time", cfg.get("vocab", 256)]),
         helper.make_tensor_value_info("state_out", TensorProto.FLOAT, [state_rows, "batch", hidden])],
        initializer=g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="mimic")
    model.ir_version = 8  # readable by every onnxruntime since 1.10
    helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    return model
