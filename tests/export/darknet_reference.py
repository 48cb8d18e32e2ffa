"""Test-side Darknet, written from ../shared/notes/darknet.md alone and sharing no code with export/darknet.py.

- `random_net`: a char-RNN's tensors, in Darknet's own terms (per [connected] block: biases, weights
  [out][in], scales, rolling_mean, rolling_variance);
- `pack_weights` / `cfg_for`: the .weights bytes (struct.pack, one block after another) and the .cfg text;
- `forward` / `greedy`: Darknet's CPU inference math, one time step at a time, in float32.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

EPS = 0.000001  # batchnorm at inference: (z - mean) / (sqrt(var) + eps)


@dataclass
class Connected:
    weights: np.ndarray  # (out, in): W[j*inputs + k] maps input k to output j
    biases: np.ndarray
    scales: np.ndarray | None = None  # present with batch_normalize=1
    rolling_mean: np.ndarray | None = None
    rolling_variance: np.ndarray | None = None

    def blocks(self) -> list[np.ndarray]:
        """Darknet's storage order: biases, weights, then scales, rolling_mean, rolling_variance."""
        out = [self.biases, self.weights]
        if self.scales is not None:
            out += [self.scales, self.rolling_mean, self.rolling_variance]
        return out


@dataclass
class Net:
    rnns: list[tuple[Connected, Connected, Connected]]  # input_layer, self_layer, output_layer
    head: Connected
    activation: str = "leaky"
    final_activation: str = "leaky"
    shortcut: bool = False  # [rnn] shortcut=1

    @property
    def hidden(self) -> int:
        return self.rnns[0][0].weights.shape[0]

    @property
    def batch_norm(self) -> bool:
        return self.rnns[0][0].scales is not None

    def state_dict(self) -> dict[str, np.ndarray]:
        """The same tensors under training/models.py's DarknetRNN names."""
        out: dict[str, np.ndarray] = {}
        for i, subs in enumerate(self.rnns):
            for name, c in zip(("input_layer", "self_layer", "output_layer"), subs, strict=True):
                p = f"rnns.{i}.{name}"
                out[f"{p}.weight"] = c.weights
                if c.scales is not None:
                    out.update({f"{p}.bn.scales": c.scales, f"{p}.bn.biases": c.biases,
                                f"{p}.bn.rolling_mean": c.rolling_mean, f"{p}.bn.rolling_variance": c.rolling_variance})
                else:
                    out[f"{p}.bias"] = c.biases
        out["head.weight"] = self.head.weights
        if self.head.scales is not None:
            out.update({"head.bn.scales": self.head.scales, "head.bn.biases": self.head.biases,
                        "head.bn.rolling_mean": self.head.rolling_mean,
                        "head.bn.rolling_variance": self.head.rolling_variance})
        else:
            out["head.bias"] = self.head.biases
        return out


def _connected(rng: np.random.Generator, n_in: int, n_out: int, bn: bool, gain: float) -> Connected:
    f = np.float32
    w = (rng.uniform(-1, 1, (n_out, n_in)) * np.sqrt(2.0 / n_in) * gain).astype(f)
    b = (rng.standard_normal(n_out) * 0.1).astype(f)
    if not bn:
        return Connected(w, b)
    return Connected(w, b, scales=rng.uniform(0.5, 1.5, n_out).astype(f),
                     rolling_mean=(rng.standard_normal(n_out) * 0.2).astype(f),
                     rolling_variance=rng.uniform(0.2, 2.0, n_out).astype(f))


def random_net(hidden: int = 16, layers: int = 3, bn: bool = True, activation: str = "leaky",
               final_activation: str = "leaky", seed: int = 0, gain: float = 1.0, shortcut: bool = False,
               head_bn: bool = False) -> Net:
    rng = np.random.default_rng(seed)
    rnns = []
    for i in range(layers):
        n_in = 256 if i == 0 else hidden
        rnns.append((_connected(rng, n_in, hidden, bn, gain), _connected(rng, hidden, hidden, bn, gain),
                     _connected(rng, hidden, hidden, bn, gain)))
    head = _connected(rng, hidden, 256, head_bn, gain * 2.0)
    return Net(rnns, head, activation, final_activation, shortcut)


def pack_weights(net: Net, seen: int = 0, major: int = 0, minor: int = 2, revision: int = 0) -> bytes:
    """A .weights file byte by byte: int32 major, minor, revision, seen, then every block as float32."""
    wide = major * 10 + minor >= 2 and major < 1000 and minor < 1000
    transposed = major > 1000 or minor > 1000
    out = struct.pack("<iii", major, minor, revision) + struct.pack("<Q" if wide else "<i", seen)
    for c in [c for subs in net.rnns for c in subs] + [net.head]:
        for arr in c.blocks():
            if transposed and arr.ndim == 2:
                arr = arr.T  # these files store the matrix as [in][out]
            flat = arr.ravel().tolist()
            out += struct.pack(f"<{len(flat)}f", *flat)
    return out


def cfg_for(net: Net, hidden_field: int | None = None, batch: int = 1, time_steps: int = 1) -> str:
    bn = 1 if net.batch_norm else 0
    text = (f"[net]\nsubdivisions=1\ninputs=256\nbatch = {batch}\nmomentum=0.9\ndecay=0.001\n"
            f"max_batches = 2000\ntime_steps={time_steps}\nlearning_rate=0.1\npolicy=steps\nsteps=1000,1500\n"
            "scales=.1,.1\n\n")
    for _ in net.rnns:
        text += (f"[rnn]\nbatch_normalize={bn}\noutput = {net.hidden}\nhidden={hidden_field or net.hidden}\n"
                 f"activation={net.activation}\n{'shortcut=1' if net.shortcut else ''}\n\n")
    head_bn = "batch_normalize=1\n" if net.head.scales is not None else ""
    return text + f"[connected]\n{head_bn}output=256\nactivation={net.final_activation}\n\n[softmax]\n\n"


def activate(z: np.ndarray, kind: str) -> np.ndarray:
    if kind == "leaky":
        return np.where(z > 0, z, np.float32(0.1) * z)  # strictly > 0, activations.h
    if kind == "linear":
        return z
    if kind == "relu":
        return z * (z > 0)
    if kind == "logistic":
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)
    if kind == "tanh":
        return np.tanh(z)
    raise ValueError(kind)


def connected_forward(c: Connected, x: np.ndarray, kind: str) -> np.ndarray:
    z = np.zeros(c.weights.shape[0], dtype=np.float32)
    z += c.weights @ x  # z_j = sum_k W[j*inputs + k] x_k; no bias before batch norm
    if c.scales is not None:
        z = (z - c.rolling_mean) / (np.sqrt(c.rolling_variance) + np.float32(EPS))
        z = z * c.scales
        z = z + c.biases  # the biases are batch norm's beta
    else:
        z = z + c.biases
    return activate(z, kind)  # the activation comes last


def forward(net: Net, tokens: list[int], states: list[np.ndarray] | None = None
            ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Logits (the [connected] output fed to softmax) for each token, and the final [rnn] states."""
    h = [s.copy() for s in states] if states is not None else [np.zeros(net.hidden, np.float32) for _ in net.rnns]
    out = []
    for c in tokens:
        x = np.zeros(256, dtype=np.float32)
        x[c] = 1  # one-hot input
        for i, (inp, slf, outl) in enumerate(net.rnns):
            a = connected_forward(inp, x, net.activation)
            b = connected_forward(slf, h[i], net.activation)  # reads the previous state
            # state = h_(t-1) with shortcut, else 0; then axpy a, axpy b (rnn_layer.c forward_rnn_layer)
            h[i] = (h[i] + a if net.shortcut else a) + b
            x = connected_forward(outl, h[i], net.activation)
        out.append(connected_forward(net.head, x, net.final_activation))
    return out, h


def greedy(net: Net, seed: bytes, length: int) -> bytes:
    """What `./darknet rnn generate -temp 0.000001` prints after the seed: argmax of the logits each step."""
    logits, h = forward(net, list(seed))
    made = []
    for _ in range(length):
        c = int(np.argmax(logits[-1]))
        made.append(c)
        logits, h = forward(net, [c], h)
    return bytes(made)


def net_from_state_dict(sd: dict[str, np.ndarray], activation: str = "leaky", final_activation: str = "leaky") -> Net:
    """The inverse of Net.state_dict: a Mimic darknet-rnn's tensors in Darknet's terms."""
    def conn(p: str) -> Connected:
        f = {k[len(p) + 1:]: np.asarray(v, dtype=np.float32) for k, v in sd.items() if k.startswith(p + ".")}
        if "bn.scales" in f:
            return Connected(f["weight"], f["bn.biases"], f["bn.scales"], f["bn.rolling_mean"], f["bn.rolling_variance"])
        return Connected(f["weight"], f["bias"])

    layers = len({k.split(".")[1] for k in sd if k.startswith("rnns.")})
    rnns = [tuple(conn(f"rnns.{i}.{s}") for s in ("input_layer", "self_layer", "output_layer")) for i in range(layers)]
    return Net(rnns, conn("head"), activation, final_activation)
