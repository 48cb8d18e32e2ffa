"""Darknet char-RNN files: read a `.cfg` + `.weights` pair as Mimic's darknet-rnn, and write one back.

Follows ../shared/notes/darknet.md (pjreddie/darknet) exactly. The only network shape accepted is the one
`cfg/rnn.cfg` describes: `[net]`, N x `[rnn]`, one `[connected]` to 256, one `[softmax]`, and optionally a
`[cost]` after it, as older copies of rnn.cfg have: it holds no weights and Darknet's output skips it
(get_network_output_layer), so it changes nothing at inference and is read and ignored.

`.weights` layout (little-endian, no padding):
    int32 major, minor, revision
    seen: uint64 when major*10+minor >= 2 (and major, minor < 1000), else int32
    then, per layer in cfg order, float32 blocks:
        [connected]  biases[out], weights[out][in] (stored [in][out] when major or minor > 1000),
                     and with batch_normalize: scales[out], rolling_mean[out], rolling_variance[out]
        [rnn]        input_layer, self_layer, output_layer: three [connected] blocks
        [softmax]    nothing

Weights come out keyed like the state_dict of training/models.py's DarknetRNN, so export/onnx_graph.py and
the torch model take them unchanged. Reading, converting to ONNX in memory and writing Darknet files need
numpy and onnx only; torch is imported inside the two functions that need it (the parity-checked export,
which uses the torch DarknetRNN as its reference, and reading a Mimic checkpoint).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from export.errors import BadConfigError, BadWeightsError, ExportError
from export.metadata import model_metadata
from training.atomic import write_atomic

if TYPE_CHECKING:
    from export.onnx_export import ExportReport

log = logging.getLogger(__name__)

VOCAB = 256  # Darknet's char-RNN reads and predicts one of 256 byte values (inputs=256, one-hot)
CUTOFF = 0.0001  # `rnn generate` zeroes probabilities below this before sampling (examples/rnn.c:290-292)

# Section names Darknet's parser accepts for the layers we support (parser.c string_to_layer_type).
SECTION_KINDS = {"[net]": "net", "[network]": "net", "[rnn]": "rnn", "[connected]": "connected",
                 "[conn]": "connected", "[softmax]": "softmax", "[soft]": "softmax", "[cost]": "cost"}
# Every [net] key pjreddie's parse_net_options reads. Only `inputs` (or height*width*channels) matters for
# inference; the rest are training and image settings, accepted and ignored.
NET_OPTIONS = frozenset({
    "batch", "learning_rate", "momentum", "decay", "subdivisions", "time_steps", "notruth", "random", "adam",
    "B1", "B2", "eps", "height", "width", "channels", "inputs", "max_crop", "min_crop", "max_ratio", "min_ratio",
    "center", "clip", "angle", "aspect", "saturation", "exposure", "hue", "policy", "burn_in", "power", "step",
    "scale", "steps", "scales", "gamma", "max_batches",
})
LAYER_OPTIONS = {
    "rnn": frozenset({"output", "hidden", "activation", "batch_normalize", "shortcut"}),
    "connected": frozenset({"output", "activation", "batch_normalize"}),
    "softmax": frozenset({"temperature", "groups"}),
    "cost": frozenset({"type", "scale", "ratio", "noobj", "thresh"}),  # parse_cost's; all training-only
}
DARKNET_ACTIVATIONS = frozenset({"logistic", "loggy", "relu", "elu", "selu", "relie", "plse", "hardtan", "lhtan",
                                 "linear", "ramp", "leaky", "tanh", "stair"})
SUPPORTED_ACTIVATIONS = ("leaky", "linear", "relu", "tanh", "logistic")  # what training/models.py implements
SUBLAYERS = ("input_layer", "self_layer", "output_layer")  # an [rnn]'s blocks, in file order

# The [net] section Mimic writes: cfg/rnn.cfg's, a generation config (batch 1, time_steps 1).
NET_SECTION = """[net]
subdivisions=1
inputs=256
batch=1
momentum=0.9
decay=0.001
max_batches=2000
time_steps=1
learning_rate=0.1
policy=steps
steps=1000,1500
scales=.1,.1
"""


# --------------------------------------------------------------------------------------------- the .cfg


@dataclass(frozen=True)
class Section:
    index: int  # position in the file; 0 is [net]
    name: str  # as written, e.g. "[rnn]"
    options: dict[str, str]

    @property
    def label(self) -> str:
        return f"section {self.index} {self.name}"


@dataclass(frozen=True)
class DarknetCfg:
    """A parsed char-RNN cfg, reduced to what fixes the weights layout and the forward pass."""

    path: str
    layers: int  # number of [rnn] sections
    hidden: int  # their `output` (Darknet ignores `hidden=`)
    activation: str
    batch_norm: bool
    final_activation: str  # the [connected] layer's
    softmax_temperature: float  # rnn generate overrides it with -temp; kept for the record
    net_options: dict[str, str] = field(default_factory=dict)
    shortcut: bool = False  # [rnn] shortcut=1: h_t = h_(t-1) + a + b
    head_batch_norm: bool = False  # batch_normalize=1 on the [connected]

    def model_config(self) -> dict[str, Any]:
        """Our darknet-rnn configuration (training.models.ModelConfig.from_dict accepts it)."""
        return model_config_dict(self.hidden, self.layers, self.batch_norm, self.activation, self.final_activation,
                                 self.shortcut, self.head_batch_norm)


def model_config_dict(hidden: int, layers: int, batch_norm: bool, activation: str,
                      final_activation: str, shortcut: bool = False, head_batch_norm: bool = False) -> dict[str, Any]:
    return {"arch": "darknet-rnn", "hidden": hidden, "layers": layers, "dropout": 0.0, "vocab": VOCAB,
            "batch_norm": batch_norm, "activation": activation, "final_activation": final_activation,
            "shortcut": shortcut, "head_batch_norm": head_batch_norm}


def read_sections(text: str, name: str) -> list[Section]:
    """Split cfg text into sections the way Darknet's read_cfg does: whitespace stripped, '#' and ';' comments."""
    sections: list[Section] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = "".join(raw.split())  # Darknet's strip() removes every blank, even inside `output = 1024`
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            sections.append(Section(len(sections), line, {}))
            continue
        key, sep, value = line.partition("=")
        if not sep or not key:
            raise BadConfigError(f"{name}: line {lineno} ({raw.strip()!r}) is not a key=value option; fix the line")
        if not sections:
            raise BadConfigError(f"{name}: line {lineno} sets {key!r} before any [section]; the file must start "
                                 "with [net]")
        sections[-1].options.setdefault(key, value)  # Darknet's option_find returns the first occurrence
    return sections


def parse_cfg_text(text: str, name: str = "the cfg") -> DarknetCfg:
    """Parse a Darknet char-RNN cfg; anything outside [net], [rnn]*N, [connected], [softmax], [cost] is a
    BadConfigError."""
    sections = read_sections(text, name)
    if not sections or SECTION_KINDS.get(sections[0].name) != "net":
        raise BadConfigError(f"{name}: the first section must be [net] (is this a Darknet .cfg?)")
    for s in sections[1:]:
        _check_known(s, name)
    net = sections[0]
    _check_options(net, NET_OPTIONS, name)
    _check_inputs(net, name)
    kinds = [SECTION_KINDS[s.name] for s in sections[1:]]
    n_rnn = next((i for i, k in enumerate(kinds) if k != "rnn"), len(kinds))
    if n_rnn == 0 or kinds[n_rnn:] not in (["connected", "softmax"], ["connected", "softmax", "cost"]):
        shape = " + ".join(s.name for s in sections[1:]) or "no layers"
        raise BadConfigError(f"{name}: the network is {shape}; Mimic runs Darknet char-RNNs shaped like "
                             "cfg/rnn.cfg: one or more [rnn], then one [connected] with output=256, then [softmax] "
                             "(and optionally [cost])")
    if kinds[-1] == "cost":
        log.info("%s: %s is ignored: it only affects training", name, sections[-1].label)
    rnns, connected, softmax = sections[1:1 + n_rnn], sections[1 + n_rnn], sections[2 + n_rnn]
    hidden, activation, batch_norm, shortcut = _rnn_settings(rnns, name)
    final_activation, head_batch_norm = _connected_settings(connected, name)
    return DarknetCfg(name, n_rnn, hidden, activation, batch_norm, final_activation,
                      _softmax_temperature(softmax, name), dict(net.options), shortcut, head_batch_norm)


def parse_cfg(path: str | Path) -> DarknetCfg:
    path = Path(path)
    if not path.is_file():
        raise BadConfigError(f"{path}: no such Darknet .cfg file")
    data = path.read_bytes()
    if b"\0" in data:
        raise BadConfigError(f"{path}: binary data, not a Darknet .cfg (the order is CFG then WEIGHTS)")
    return parse_cfg_text(data.decode("utf-8", errors="replace"), str(path))


def _check_known(s: Section, name: str) -> None:
    kind = SECTION_KINDS.get(s.name)
    if kind is None:
        raise BadConfigError(f"{name}: {s.label}: layer type {s.name} is not supported; Mimic reads "
                             "[net], [rnn], [connected], [softmax] and [cost]")
    if kind == "net":
        raise BadConfigError(f"{name}: {s.label}: a second [net] section; keep only the first")
    _check_options(s, LAYER_OPTIONS[kind], name)


def _check_options(s: Section, known: frozenset[str], name: str) -> None:
    for key in s.options:
        if key not in known:
            raise BadConfigError(f"{name}: {s.label}: option {key!r} is not supported there (known: "
                                 f"{', '.join(sorted(known))}); remove it")


def _int_option(s: Section, key: str, default: int, name: str) -> int:
    raw = s.options.get(key)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise BadConfigError(f"{name}: {s.label}: {key}={raw!r} is not a whole number") from None


def _activation_option(s: Section, name: str) -> str:
    act = s.options.get("activation", "logistic")  # Darknet's default for [rnn] and [connected]
    if act not in DARKNET_ACTIVATIONS:
        raise BadConfigError(f"{name}: {s.label}: activation={act!r} is not a Darknet activation")
    if act not in SUPPORTED_ACTIVATIONS:
        raise BadConfigError(f"{name}: {s.label}: activation={act!r} is not supported by Mimic "
                             f"(supported: {', '.join(SUPPORTED_ACTIVATIONS)})")
    return act


def _check_inputs(net: Section, name: str) -> None:
    hwc = 1
    for key in ("height", "width", "channels"):
        hwc *= _int_option(net, key, 0, name)
    inputs = _int_option(net, "inputs", hwc, name)
    if inputs != VOCAB:
        raise BadConfigError(f"{name}: {net.label}: inputs={inputs}; a char-RNN reads one byte as a one-hot "
                             f"vector, so set inputs={VOCAB}")


def _rnn_settings(rnns: list[Section], name: str) -> tuple[int, str, bool, bool]:
    """The [rnn] sections must agree: Mimic's darknet-rnn has one size, activation, BN and shortcut setting for
    all."""
    settings = []
    for s in rnns:
        output = _int_option(s, "output", 1, name)
        if output < 1:
            raise BadConfigError(f"{name}: {s.label}: output={output} must be at least 1")
        hidden = s.options.get("hidden")
        if hidden is not None and hidden != str(output):
            log.info("%s: %s: hidden=%s is ignored, as Darknet ignores it; the state size is output=%d",
                     name, s.label, hidden, output)
        settings.append((output, _activation_option(s, name), _int_option(s, "batch_normalize", 0, name) != 0,
                         _int_option(s, "shortcut", 0, name) != 0))
    for s, setting in zip(rnns[1:], settings[1:], strict=True):
        if setting != settings[0]:
            raise BadConfigError(f"{name}: {s.label}: output/activation/batch_normalize/shortcut {setting} differ from the "
                                 f"first [rnn]'s {settings[0]}; Mimic needs every [rnn] alike")
    return settings[0]


def _connected_settings(s: Section, name: str) -> tuple[str, bool]:
    """The [connected] layer's activation and whether it is batch-normalised."""
    output = _int_option(s, "output", 1, name)
    if output != VOCAB:
        raise BadConfigError(f"{name}: {s.label}: output={output}; the last [connected] predicts one of "
                             f"{VOCAB} bytes, so set output={VOCAB}")
    return _activation_option(s, name), _int_option(s, "batch_normalize", 0, name) != 0


def _softmax_temperature(s: Section, name: str) -> float:
    if _int_option(s, "groups", 1, name) != 1:
        raise BadConfigError(f"{name}: {s.label}: groups={s.options['groups']} is not supported; use groups=1")
    raw = s.options.get("temperature", "1")
    try:
        return float(raw)
    except ValueError:
        raise BadConfigError(f"{name}: {s.label}: temperature={raw!r} is not a number") from None


# ----------------------------------------------------------------------------------- the weights layout


@dataclass(frozen=True)
class Block:
    """One Darknet [connected] (sub)layer as stored in .weights."""

    prefix: str  # our state_dict prefix, e.g. "rnns.0.self_layer" or "head"
    n_in: int
    n_out: int
    batch_norm: bool

    @property
    def floats(self) -> int:
        return self.n_out * (self.n_in + (4 if self.batch_norm else 1))


def blocks(config: Mapping[str, Any]) -> list[Block]:
    """The connected blocks of a darknet-rnn config, in the order Darknet stores them."""
    hidden, bn = int(config["hidden"]), bool(config["batch_norm"])
    out = []
    for i in range(int(config["layers"])):
        n_in = VOCAB if i == 0 else hidden
        out += [Block(f"rnns.{i}.{sub}", n_in if sub == "input_layer" else hidden, hidden, bn) for sub in SUBLAYERS]
    return out + [Block("head", hidden, VOCAB, bool(config.get("head_batch_norm", False)))]


def header_size(major: int = 0, minor: int = 2) -> int:
    return 12 + (8 if _seen_is_64bit(major, minor) else 4)


def _seen_is_64bit(major: int, minor: int) -> bool:
    # parser.c load_weights_upto: size_t seen from version 0.2 on, except in the transposed (>= 1000) files
    return major * 10 + minor >= 2 and major < 1000 and minor < 1000


def expected_weights_size(cfg: DarknetCfg | Mapping[str, Any], major: int = 0, minor: int = 2) -> int:
    """Bytes of the .weights file for this cfg (cfg/rnn.cfg: 35,800,084), without reading or allocating it."""
    config = cfg.model_config() if isinstance(cfg, DarknetCfg) else cfg
    return header_size(major, minor) + 4 * sum(b.floats for b in blocks(config))


def rand_draws_at_load(cfg: DarknetCfg | Mapping[str, Any]) -> int:
    """rand() calls Darknet makes initialising weights before it loads a file: one per weight (8,912,896 for
    cfg/rnn.cfg). Reproducing `-srand N` exactly means skipping these first."""
    config = cfg.model_config() if isinstance(cfg, DarknetCfg) else cfg
    return sum(b.n_in * b.n_out for b in blocks(config))


# ---------------------------------------------------------------------------------- reading .weights


@dataclass(frozen=True)
class WeightsHeader:
    major: int
    minor: int
    revision: int
    seen: int  # training characters processed (iterations * batch * time_steps)

    @property
    def transposed(self) -> bool:
        return self.major > 1000 or self.minor > 1000

    @property
    def size(self) -> int:
        return header_size(self.major, self.minor)


@dataclass(frozen=True)
class DarknetModel:
    config: dict[str, Any]  # ModelConfig-compatible
    weights: dict[str, np.ndarray]  # keyed like DarknetRNN's state_dict, float32
    header: WeightsHeader
    cfg: DarknetCfg
    weights_path: str


def read_header(data: bytes, name: str) -> WeightsHeader:
    if len(data) < 12:
        raise BadWeightsError(f"{name}: {len(data)} bytes, too short for a Darknet .weights header (16 or 20 bytes)")
    major, minor, revision = struct.unpack_from("<3i", data)
    wide = _seen_is_64bit(major, minor)
    if len(data) < 12 + (8 if wide else 4):
        raise BadWeightsError(f"{name}: {len(data)} bytes, too short for a Darknet .weights header "
                              f"({header_size(major, minor)} bytes)")
    (seen,) = struct.unpack_from("<Q" if wide else "<i", data, 12)
    return WeightsHeader(major, minor, revision, seen)


def read_weights(data: bytes, cfg: DarknetCfg, name: str = "the weights") -> tuple[dict[str, np.ndarray],
                                                                                    WeightsHeader]:
    """Split a .weights file's bytes into our state_dict layout; the size must match the cfg exactly."""
    header = read_header(data, name)
    config = cfg.model_config()
    expected = expected_weights_size(config, header.major, header.minor)
    if len(data) != expected:
        raise BadWeightsError(_size_mismatch(name, cfg, len(data), expected, header))
    weights: dict[str, np.ndarray] = {}
    offset = header.size
    for block in blocks(config):
        for key, value in _read_block(data, offset, block, header.transposed):
            weights[key] = value
        offset += 4 * block.floats
    return weights, header


def _read_block(data: bytes, offset: int, block: Block, transposed: bool) -> Iterator[tuple[str, np.ndarray]]:
    def take(n: int) -> np.ndarray:
        nonlocal offset
        arr = np.frombuffer(data, dtype="<f4", count=n, offset=offset).astype(np.float32)  # a native, owned copy
        offset += 4 * n
        return arr

    o, i = block.n_out, block.n_in
    biases = take(o)
    weight = take(o * i)
    # transposed files store [in][out] (parser.c transpose_matrix); ours is Darknet's usual [out][in]
    weight = np.ascontiguousarray(weight.reshape(i, o).T) if transposed else weight.reshape(o, i)
    yield f"{block.prefix}.weight", weight
    if block.batch_norm:
        yield f"{block.prefix}.bn.biases", biases  # with batch norm the biases are its beta
        for key in ("scales", "rolling_mean", "rolling_variance"):
            yield f"{block.prefix}.bn.{key}", take(o)
    else:
        yield f"{block.prefix}.bias", biases


def _size_mismatch(name: str, cfg: DarknetCfg, actual: int, expected: int, header: WeightsHeader) -> str:
    what = (f"{cfg.layers} x [rnn] output={cfg.hidden}{' with batch_normalize' if cfg.batch_norm else ''} "
            f"+ [connected] {VOCAB}")
    if actual < expected:
        problem = f"is {actual:,} bytes but {cfg.path} ({what}) needs {expected:,} bytes: truncated, or "
        problem += "written for a smaller network"
    else:
        problem = f"is {actual:,} bytes but {cfg.path} ({what}) needs only {expected:,} bytes: "
        extra = actual - expected
        problem += f"{extra:,} trailing byte{'s' if extra != 1 else ''}, or written for a larger network"
    fit = _hidden_that_fits(cfg, actual, header)
    hint = f"; the size fits output={fit}: is the cfg right?" if fit else "; check the file and the cfg"
    return f"{name} {problem}{hint}"


def _hidden_that_fits(cfg: DarknetCfg, actual: int, header: WeightsHeader) -> int | None:
    """The [rnn] output size that would explain a file of this size, to point at the likelier mistake."""
    for hidden in range(1, 8193):
        config = model_config_dict(hidden, cfg.layers, cfg.batch_norm, cfg.activation, cfg.final_activation,
                                   cfg.shortcut, cfg.head_batch_norm)
        size = expected_weights_size(config, header.major, header.minor)
        if size == actual:
            return hidden
        if size > actual:
            return None
    return None


def load_darknet(cfg_path: str | Path, weights_path: str | Path) -> DarknetModel:
    """Read a Darknet `.cfg` + `.weights` pair: our config dict, our weights dict and the file header."""
    cfg = parse_cfg(cfg_path)
    path = Path(weights_path)
    if not path.is_file():
        raise BadWeightsError(f"{path}: no such Darknet .weights file")
    weights, header = read_weights(path.read_bytes(), cfg, str(path))
    return DarknetModel(cfg.model_config(), weights, header, cfg, str(path))


# ---------------------------------------------------------------------------------- writing Darknet


def _with_defaults(config: Mapping[str, Any]) -> dict[str, Any]:
    """Fill what a partial config dict leaves out with training.models.ModelConfig's defaults."""
    return {"batch_norm": True, "activation": "leaky", "final_activation": "leaky", "shortcut": False, "vocab": VOCAB,
            "head_batch_norm": False, **config}


def cfg_text(config: Mapping[str, Any]) -> str:
    """A generation cfg like Darknet's cfg/rnn.cfg (batch=1, time_steps=1) for a darknet-rnn config."""
    config = _with_defaults(config)
    _check_writable(config)
    bn = 1 if config["batch_norm"] else 0
    parts = ["# written by Mimic from a darknet-rnn model; a generation cfg (batch=1, time_steps=1)\n" + NET_SECTION]
    shortcut = "shortcut=1\n" if config["shortcut"] else ""
    parts += [f"[rnn]\nbatch_normalize={bn}\noutput={config['hidden']}\nhidden={config['hidden']}\n"
              f"activation={config['activation']}\n{shortcut}"] * int(config["layers"])
    head_bn = "batch_normalize=1\n" if config.get("head_batch_norm") else ""
    parts += [f"[connected]\n{head_bn}output={VOCAB}\nactivation={config['final_activation']}\n", "[softmax]\n"]
    return "\n".join(parts)


def weights_bytes(config: Mapping[str, Any], weights: Mapping[str, Any], seen: int = 0) -> bytes:
    """The .weights file (version 0.2.0) for a darknet-rnn config and its state_dict-keyed weights."""
    config = _with_defaults(config)
    _check_writable(config)
    out = [struct.pack("<3iQ", 0, 2, 0, seen)]
    for block in blocks(config):
        names = ["bn.biases", "weight", "bn.scales", "bn.rolling_mean", "bn.rolling_variance"] if block.batch_norm \
            else ["bias", "weight"]
        for part in names:
            out.append(_block_array(weights, f"{block.prefix}.{part}", block).tobytes())
    return b"".join(out)


def _block_array(weights: Mapping[str, Any], key: str, block: Block) -> np.ndarray:
    if key not in weights:
        raise ExportError(f"the model has no {key!r}; is it a darknet-rnn of this configuration?")
    arr = np.asarray(weights[key], dtype="<f4")
    want = (block.n_out, block.n_in) if key.endswith(".weight") else (block.n_out,)
    if arr.shape != want:
        raise ExportError(f"{key} has shape {arr.shape}, expected {want}")
    return np.ascontiguousarray(arr)


def _check_writable(config: Mapping[str, Any]) -> None:
    if config.get("arch") != "darknet-rnn":
        raise ExportError(f"only a darknet-rnn model can be written as Darknet files, not {config.get('arch')!r}; "
                          "train one with --arch darknet-rnn")
    if int(config["vocab"]) != VOCAB:
        raise ExportError(f"Darknet's char-RNN has {VOCAB} inputs; this model has vocab={config['vocab']}")
    for key in ("activation", "final_activation"):
        if config[key] not in SUPPORTED_ACTIVATIONS:
            raise ExportError(f"{key}={config[key]!r} has no Darknet equivalent")


def write_darknet(cfg_path: str | Path, weights_path: str | Path, model_cfg: Any, weights: Mapping[str, Any],
                  seen: int = 0) -> tuple[Path, Path]:
    """Write a darknet-rnn model as a Darknet `.cfg` + `.weights` pair that `./darknet rnn generate` runs.

    `model_cfg` is a ModelConfig or its dict; `weights` maps state_dict keys to arrays (numpy, or CPU tensors).
    """
    config = _with_defaults(model_cfg.to_dict() if hasattr(model_cfg, "to_dict") else model_cfg)
    text, data = cfg_text(config), weights_bytes(config, weights, seen)
    cfg_out, weights_out = Path(cfg_path), Path(weights_path)
    write_atomic(weights_out, data)
    write_atomic(cfg_out, text.encode("ascii"))
    return cfg_out, weights_out


# --------------------------------------------------------------------------------------- to ONNX


def darknet_metadata(model: DarknetModel) -> dict[str, str]:
    """ONNX metadata for a model read from Darknet files: the engine contract plus what generation needs."""
    c = model.config
    return model_metadata(
        c,
        source="darknet",
        darknet_cfg=Path(model.cfg.path).name,
        darknet_weights=Path(model.weights_path).name,
        darknet_version=f"{model.header.major}.{model.header.minor}.{model.header.revision}",
        seen=str(model.header.seen),
        activation=c["activation"],
        batch_norm="1" if c["batch_norm"] else "0",
        final_activation=c["final_activation"],
        darknet_cutoff=str(CUTOFF),
        darknet_rand_skip=str(rand_draws_at_load(c)),
        darknet_softmax_temperature=repr(model.cfg.softmax_temperature),
    )


def to_onnx_bytes(model: DarknetModel) -> bytes:
    """The serving graph for a Darknet model, in memory (what `mimic generate rnn.cfg x.weights` runs)."""
    from export.onnx_graph import build_onnx

    return build_onnx(model.config, model.weights, darknet_metadata(model)).SerializeToString()


def export_darknet(cfg_path: str | Path, weights_path: str | Path, out_path: str | Path) -> ExportReport:
    """`mimic export rnn.cfg x.weights OUT.onnx`: convert, prove parity against the torch DarknetRNN, write."""
    out = Path(out_path)
    if out.suffix.lower() != ".onnx":
        raise ExportError(f"{out}: the output should end in .onnx")
    model = load_darknet(cfg_path, weights_path)
    try:
        import torch

        from export.onnx_export import export_model
        from training.models import DarknetRNN, ModelConfig
    except ImportError as exc:
        raise ExportError("converting Darknet weights with the parity check needs torch: "
                          "pip install 'mimic[train]'") from exc
    cfg = ModelConfig.from_dict(model.config)
    reference = DarknetRNN(cfg)
    reference.load_state_dict({k: torch.from_numpy(v) for k, v in model.weights.items()})
    return export_model(reference.eval(), cfg, out, darknet_metadata(model))


@dataclass(frozen=True)
class DarknetFiles:
    cfg_path: Path
    weights_path: Path
    seen: int


def export_checkpoint_to_darknet(ckpt_path: str | Path, out_weights: str | Path) -> DarknetFiles:
    """`mimic export CKPT OUT.weights --darknet`: OUT.weights and OUT.cfg beside it, read back to check."""
    from training.checkpoint import load_checkpoint, model_from_checkpoint

    out = Path(out_weights)
    if out.suffix.lower() in (".cfg", ".onnx"):
        raise ExportError(f"{out}: name the .weights file (OUT.weights); its .cfg is written beside it")
    ckpt = load_checkpoint(ckpt_path)
    model, cfg = model_from_checkpoint(ckpt)
    if cfg.arch != "darknet-rnn":
        raise ExportError(f"{ckpt_path}: a {cfg.arch} model; only darknet-rnn checkpoints can be written as "
                          "Darknet files (train with --arch darknet-rnn), or export it to .onnx instead")
    weights = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
    cfg_out = out.with_suffix(".cfg") if out.suffix else out.with_name(out.name + ".cfg")
    seen = _chars_seen(ckpt)
    write_darknet(cfg_out, out, cfg, weights, seen)
    _check_round_trip(cfg_out, out, weights)
    return DarknetFiles(cfg_out, out, seen)


def _chars_seen(ckpt: Mapping[str, Any]) -> int:
    """Darknet's `seen`: training characters processed (steps x streams x window x ranks)."""
    train = ckpt.get("train_config") or {}
    try:
        return int(ckpt.get("step", 0)) * int(train["batch_size"]) * int(train["seq_len"]) * \
            int(ckpt.get("world_size", 1))
    except (KeyError, TypeError, ValueError):
        return 0


def _check_round_trip(cfg_path: Path, weights_path: Path, weights: Mapping[str, np.ndarray]) -> None:
    """Read the files back with our own reader: every array Darknet stores must come back bit for bit."""
    again = load_darknet(cfg_path, weights_path).weights  # the model's other buffers (counters) are not stored
    if any(k not in weights or not np.array_equal(v, weights[k], equal_nan=True) for k, v in again.items()):
        cfg_path.unlink(missing_ok=True)
        weights_path.unlink(missing_ok=True)
        raise ExportError(f"{weights_path}: the written Darknet files did not read back as the model, so they "
                          "were removed (a Mimic bug: please report it)")
