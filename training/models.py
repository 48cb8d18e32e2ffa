"""The byte-level character models: the seed's Darknet RNN, a GRU and an LSTM.

Every model maps `tokens` (B, T) int64 bytes and a hidden `state` (S, B, H) to `logits` (B, T, 256) and the
new state, so training, export and the engine all see one shape contract. S is the number of state rows:
`layers` for darknet-rnn and gru, `2 * layers` for lstm (all h rows, then all c rows).

A GRU or LSTM with `speaker_slots > 0` also takes `speakers` (B, T) int64: the slot of the person writing
each input byte (0: nobody, see training/speaker_slots.py). That speaker's learned vector is added to the
byte's embedding at every step, so who is speaking never has to survive in the state. darknet-rnn stays as
Darknet has it, unconditioned.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

VOCAB_SIZE = 256  # raw bytes, like Darknet's inputs=256 one-hot
ARCHS = ("gru", "lstm", "darknet-rnn")
LEAKY_SLOPE = 0.1  # Darknet's leaky activation
BN_MOMENTUM = 0.01  # Darknet: rolling = 0.99 * rolling + 0.01 * batch statistic
BN_INFER_EPS = 1e-6  # Darknet's CPU inference adds eps to the std, not the variance
BN_TRAIN_EPS = 1e-5


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "gru"
    hidden: int = 256
    layers: int = 1
    dropout: float = 0.0
    vocab: int = VOCAB_SIZE
    batch_norm: bool = True  # darknet-rnn only, as in cfg/rnn.cfg
    activation: str = "leaky"  # darknet-rnn recurrent modules: leaky | linear | relu | tanh | logistic
    final_activation: str = "leaky"  # darknet-rnn's last [connected]; cfg/rnn.cfg says leaky
    shortcut: bool = False  # darknet-rnn's [rnn] shortcut=1: the state keeps a running sum, h_t = h_(t-1) + a + b
    head_batch_norm: bool = False  # darknet-rnn's last [connected] with batch_normalize=1 (cfg/rnn.cfg has none)
    speaker_slots: int = 0  # gru/lstm: rows of the speaker embedding, row 0 = no speaker; 0: unconditioned

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"unknown architecture {self.arch!r}; choose one of {', '.join(ARCHS)}")
        if self.hidden < 1 or self.layers < 1:
            raise ValueError("hidden and layers must be at least 1")
        if self.speaker_slots < 0 or self.speaker_slots == 1:
            raise ValueError("speaker_slots must be 0 (no speaker conditioning) or at least 2 (slot 0 is nobody)")
        if self.speaker_slots and self.arch == "darknet-rnn":
            raise ValueError("darknet-rnn is unconditioned, as Darknet has it; speaker_slots needs gru or lstm")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")
        for act in (self.activation, self.final_activation):
            if act not in ACTIVATIONS:
                raise ValueError(f"unknown activation {act!r}; choose one of {', '.join(ACTIVATIONS)}")

    @property
    def state_rows(self) -> int:
        return 2 * self.layers if self.arch == "lstm" else self.layers

    def to_dict(self) -> dict:
        return asdict(self)

    def differences(self, other: ModelConfig) -> list[str]:
        """What differs from `other`, one "field ours vs theirs" each (for a clear warm-start error)."""
        a, b = self.to_dict(), other.to_dict()
        return [f"{k} {a[k]} vs {b[k]}" for k in a if a[k] != b[k]]

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


ACTIVATIONS = {
    "leaky": lambda x: F.leaky_relu(x, LEAKY_SLOPE),
    "linear": lambda x: x,
    "relu": F.relu,
    "tanh": torch.tanh,
    "logistic": torch.sigmoid,
}


class DarknetBatchNorm(nn.Module):
    """Darknet's batch norm: batch statistics in training, rolling ones at inference, (x - m) / (sqrt(v) + 1e-6).

    Darknet's rolling statistics are an EMA with weight 0.01 starting from zero, which takes thousands of
    updates to settle; a short run would then evaluate with unsettled statistics. Until 1/n drops below
    0.01 we use the cumulative average (weight 1/n) instead, then Darknet's EMA.
    """

    def __init__(self, n: int):
        super().__init__()
        self.scales = nn.Parameter(torch.ones(n))
        self.biases = nn.Parameter(torch.zeros(n))
        self.register_buffer("rolling_mean", torch.zeros(n))
        self.register_buffer("rolling_variance", torch.ones(n))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # z: (N, n)
        if self.training and z.shape[0] > 1:
            mean = z.mean(0)
            var = z.var(0, unbiased=False)
            zhat = (z - mean) / torch.sqrt(var + BN_TRAIN_EPS)
            with torch.no_grad():
                self.updates += 1
                # Computed on the device: reading the count back (float(self.updates)) would make the GPU
                # wait for the host at every time step of every layer.
                weight = self.updates.reciprocal().clamp(min=BN_MOMENTUM).to(self.rolling_mean.dtype)
                unbiased = var * z.shape[0] / (z.shape[0] - 1)
                self.rolling_mean.lerp_(mean.float(), weight)
                self.rolling_variance.lerp_(unbiased.float(), weight)
        else:
            zhat = (z - self.rolling_mean) / (torch.sqrt(self.rolling_variance) + BN_INFER_EPS)
        return zhat * self.scales + self.biases

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001 - torch's signature
        # Darknet .weights files carry no update count: their statistics are settled.
        state_dict.setdefault(prefix + "updates", torch.tensor(1_000_000))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class DarknetConnected(nn.Module):
    """Darknet's [connected] layer: W x, then batch norm (whose beta is the bias) or a bias, then the activation."""

    def __init__(self, n_in: int, n_out: int, batch_norm: bool, activation: str):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_out, n_in).uniform_(-1, 1) * (2.0 / n_in) ** 0.5)
        self.bn = DarknetBatchNorm(n_out) if batch_norm else None
        self.bias = None if batch_norm else nn.Parameter(torch.zeros(n_out))
        self.act = ACTIVATIONS[activation]

    def _finish(self, z: torch.Tensor) -> torch.Tensor:  # z: (..., n_out)
        z = self.bn(z.reshape(-1, z.shape[-1])).reshape(z.shape) if self.bn is not None else z + self.bias
        return self.act(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._finish(x @ self.weight.t())

    def forward_one_hot(self, tokens: torch.Tensor) -> torch.Tensor:
        # W @ one_hot(c) is column c of W: a lookup, not a 256-wide product.
        return self._finish(F.embedding(tokens, self.weight.t()))


class DarknetRNNLayer(nn.Module):
    """Darknet's [rnn]: h_t = act(BN(W_in x_t)) + act(BN(W_self h_{t-1})); y_t = act(BN(W_out h_t)).
    With shortcut, h_t = h_{t-1} + act(BN(W_in x_t)) + act(BN(W_self h_{t-1})), summed in Darknet's order."""

    def __init__(self, n_in: int, hidden: int, batch_norm: bool, activation: str, one_hot_input: bool,
                 shortcut: bool = False):
        super().__init__()
        self.shortcut = shortcut
        self.input_layer = DarknetConnected(n_in, hidden, batch_norm, activation)
        self.self_layer = DarknetConnected(hidden, hidden, batch_norm, activation)
        self.output_layer = DarknetConnected(hidden, hidden, batch_norm, activation)
        self.one_hot_input = one_hot_input

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # x: (B, T) tokens or (B, T, n_in); h: (B, H)
        a = self.input_layer.forward_one_hot(x) if self.one_hot_input else self.input_layer(x)  # (B, T, H)
        states = []
        for t in range(a.shape[1]):  # the recurrence is sequential; the two projections around it are not
            h = (h + a[:, t] if self.shortcut else a[:, t]) + self.self_layer(h)
            states.append(h)
        hs = torch.stack(states, dim=1)  # (B, T, H)
        return self.output_layer(hs), h


class DarknetRNN(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.rnns = nn.ModuleList(
            DarknetRNNLayer(cfg.vocab if i == 0 else cfg.hidden, cfg.hidden, cfg.batch_norm, cfg.activation, i == 0,
                            cfg.shortcut)
            for i in range(cfg.layers)
        )
        self.drop = nn.Dropout(cfg.dropout)
        self.head = DarknetConnected(cfg.hidden, cfg.vocab, batch_norm=cfg.head_batch_norm,
                                     activation=cfg.final_activation)

    def forward(self, tokens: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, new_state = tokens, []
        for i, rnn in enumerate(self.rnns):
            x, h = rnn(x, state[i])
            x = self.drop(x)
            new_state.append(h)
        return self.head(x), torch.stack(new_state)


class _ByteRNN(nn.Module):
    """What the GRU and the LSTM share: byte embedding (plus the writer's vector), dropout, output head.

    Speaker rows start at zero (no random draw, so the other weights start as an unconditioned model's
    would): a slot assigned later, when a warm start meets a new person, starts out exactly unconditioned,
    and padding_idx keeps row 0, nobody, at zero for good.
    """

    def __init__(self, cfg: ModelConfig, rnn: type[nn.GRU] | type[nn.LSTM]):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab, cfg.hidden)
        self.rnn = rnn(cfg.hidden, cfg.hidden, cfg.layers, batch_first=True,
                       dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.hidden, cfg.vocab)
        self.speaker = nn.Embedding.from_pretrained(torch.zeros(cfg.speaker_slots, cfg.hidden), freeze=False,
                                                    padding_idx=0) if cfg.speaker_slots else None

    def _inputs(self, tokens: torch.Tensor, speakers: torch.Tensor | None) -> torch.Tensor:
        x = self.embed(tokens)  # (B, T, H)
        if self.speaker is not None and speakers is not None:
            x = x + self.speaker(speakers)  # (B, T, H): the writer's vector, added at every byte
        return self.drop(x)


class GRUModel(_ByteRNN):
    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg, nn.GRU)

    def forward(self, tokens: torch.Tensor, state: torch.Tensor,
                speakers: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        y, h = self.rnn(self._inputs(tokens, speakers), state)  # y: (B, T, H), h: (L, B, H)
        return self.head(self.drop(y)), h


class LSTMModel(_ByteRNN):
    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg, nn.LSTM)

    def forward(self, tokens: torch.Tensor, state: torch.Tensor,
                speakers: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h0, c0 = state.chunk(2)  # state: (2L, B, H) = h rows then c rows
        y, (h, c) = self.rnn(self._inputs(tokens, speakers), (h0.contiguous(), c0.contiguous()))
        return self.head(self.drop(y)), torch.cat([h, c])


def build_model(cfg: ModelConfig) -> nn.Module:
    return {"gru": GRUModel, "lstm": LSTMModel, "darknet-rnn": DarknetRNN}[cfg.arch](cfg)


def initial_state(cfg: ModelConfig, batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
    return torch.zeros(cfg.state_rows, batch, cfg.hidden, device=device)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
