"""Train a character model: truncated BPTT over parallel streams, AdamW, clipping, warm-up + cosine decay.

Runs on one CPU or GPU, or under `torchrun` with DistributedDataParallel (gloo on CPUs, NCCL on GPUs):
each rank reads its own streams of the text and rank 0 evaluates, checkpoints and reports progress.
Progress goes to a callback; nothing here draws or prints. A chat corpus's speakers get slots in the model's
speaker embedding (training/speaker_slots.py); the slot table is saved in the checkpoint and extended, never
renumbered, by a warm start or a resume.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from training.checkpoint import load_checkpoint, save_checkpoint
from training.errors import BadCheckpointError, BadInputError
from training.models import ModelConfig, build_model, count_parameters, initial_state
from training.speaker_slots import extend_slots, speaker_ids
from training.textdata import BITS_PER_NAT, StreamBatcher, eval_streams, split_holdout

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    steps: int | None = None  # this run stops after this many steps (more steps, when resuming) ...
    time_budget: float | None = None  # ... or after this many seconds, whichever comes first
    batch_size: int = 32  # parallel streams per rank
    seq_len: int = 128  # BPTT window
    lr: float = 3e-3
    min_lr_ratio: float = 0.05
    warmup_steps: int = 50
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    eval_every: int = 200
    eval_chars: int = 65_536  # periodic evaluations read this much held-out text; the final one reads all
    checkpoint_every: int = 500
    valid_fraction: float = 0.05
    seed: int = 1337
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 autocast on CUDA) | fp32 | bf16
    threads: int | None = None  # torch intra-op threads; None: half the cores

    def __post_init__(self) -> None:
        if self.steps is None and self.time_budget is None:
            raise BadInputError("give --steps or --time-budget")
        if self.steps is not None and self.steps < 1:
            raise BadInputError("--steps must be at least 1")
        if self.time_budget is not None and not (self.time_budget > 0 and math.isfinite(self.time_budget)):
            raise BadInputError(f"--time-budget must be a positive number of seconds, not {self.time_budget}")
        if self.batch_size < 1 or self.seq_len < 1:
            raise BadInputError("--batch-size and --seq-len must be at least 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise BadInputError(f"--lr must be a positive number, not {self.lr}")
        if self.threads is not None and self.threads < 1:
            raise BadInputError("--threads must be at least 1")
        if not 0.0 < self.valid_fraction < 1.0:
            raise BadInputError(f"--valid-fraction must be between 0 and 1, not {self.valid_fraction}")
        if self.eval_every < 0 or self.checkpoint_every < 0:
            raise BadInputError("--eval-every and --checkpoint-every must be zero or more")
        if not 0 <= self.seed < 2**63:
            raise BadInputError(f"--seed must be from 0 to 2**63 - 1, not {self.seed}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise BadInputError(f"unknown device {self.device!r}; use auto, cpu or cuda")


@dataclass
class Progress:
    step: int
    total_steps: int | None
    elapsed: float
    time_budget: float | None
    loss: float  # mean nats per character of the last step
    chars_per_sec: float
    val_bpc: float | None = None  # set on the steps that evaluated
    lr: float = 0.0

    @property
    def bpc(self) -> float:
        return self.loss * BITS_PER_NAT

    @property
    def fraction_done(self) -> float:
        parts = []
        if self.total_steps:
            parts.append(self.step / self.total_steps)
        if self.time_budget:
            parts.append(self.elapsed / self.time_budget)
        return min(1.0, max(parts)) if parts else 0.0


@dataclass
class TrainResult:
    checkpoint: Path
    step: int
    val_bpc: float
    elapsed: float
    chars_per_sec: float
    parameters: int
    history: list[dict[str, float]] = field(default_factory=list)
    device: str = "cpu"
    interrupted: bool = False
    is_main: bool = True  # False on the other ranks of a torchrun job
    speaker_slots: dict[str, int] = field(default_factory=dict)  # speaker -> embedding row; {}: unconditioned
    stop_signal: int | None = None  # signal.SIGINT or SIGTERM when a signal stopped the run


def default_threads() -> int:
    """Half the cores: on a shared 2-core machine an oversubscribed pool makes an RNN many times slower."""
    return max(1, (os.cpu_count() or 2) // 2)


def lr_at(step: int, time_progress: float, cfg: TrainConfig) -> float:
    """Linear warm-up over `warmup_steps`, then a decay to `min_lr_ratio * lr`.

    With a time budget the decay is a cosine over the budget, so the rate is lowest when time runs out.
    With only a step count it is an inverse square root of the step, which does not depend on how many
    steps are planned: N steps, then a resume for N more, follow the same rates as 2N steps in one go.
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.time_budget:
        cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, time_progress)))
        return cfg.lr * (cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * cosine)
    return cfg.lr * max(cfg.min_lr_ratio, math.sqrt(max(1, cfg.warmup_steps) / (step + 1)))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BadInputError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    return torch.device(name)


def _model_inputs(x: torch.Tensor, state: torch.Tensor, speakers: torch.Tensor | None) -> tuple:
    """A model's arguments: speaker slots only for a model that takes them (darknet-rnn never does)."""
    return (x, state) if speakers is None else (x, state, speakers)


@torch.no_grad()
def evaluate_bpc(model: torch.nn.Module, cfg: ModelConfig, text: bytes, device: torch.device,
                 max_chars: int | None = None, window: int = 256, speakers: np.ndarray | None = None) -> float:
    """Bits per character of `model` on `text`, read as many parallel streams with the state carried;
    `speakers` is the slot of every byte of `text` for a speaker-conditioned model."""
    tokens, slots = eval_streams(text, max_chars=max_chars, speakers=speakers)
    streams = torch.from_numpy(tokens).to(device)  # (E, L)
    spk = torch.from_numpy(slots).to(device) if slots is not None else None  # (E, L)
    was_training = model.training
    model.eval()
    state = initial_state(cfg, streams.shape[0], device)
    total, count = 0.0, 0
    for start in range(0, streams.shape[1] - 1, window):
        x = streams[:, start:start + window]
        y = streams[:, start + 1:start + window + 1]
        x = x[:, :y.shape[1]]
        s = spk[:, start:start + y.shape[1]] if spk is not None else None
        logits, state = model(*_model_inputs(x, state, s))
        total += F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
        count += y.numel()
    model.train(was_training)
    return total / max(1, count) * BITS_PER_NAT


class _Distributed:
    """What this process is under torchrun; a no-op on a single process."""

    def __init__(self, device_name: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.active = self.world > 1
        if self.active and not dist.is_initialized():
            use_cuda = device_name != "cpu" and torch.cuda.is_available()
            dist.init_process_group("nccl" if use_cuda else "gloo")
        self.device = resolve_device(device_name)
        if self.active and self.device.type == "cuda":
            self.device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(self.device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def any(self, flag: bool) -> bool:
        if not self.active:
            return flag
        t = torch.tensor([int(flag)], device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """Stack every rank's tensor along a new first axis (for the carried hidden state)."""
        if not self.active:
            return t.unsqueeze(0)
        parts = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(parts, t.contiguous())
        return torch.stack(parts)

    def close(self) -> None:
        if self.active and dist.is_initialized():
            dist.destroy_process_group()


def _rng_state(device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _build_on(model_cfg: ModelConfig, device: torch.device) -> torch.nn.Module:
    """The model on `device`, or a one-line error when it does not fit in memory."""
    try:
        return build_model(model_cfg).to(device)
    except (RuntimeError, MemoryError) as exc:  # the CPU allocator's failure is a plain RuntimeError
        if not isinstance(exc, torch.OutOfMemoryError | MemoryError) and "allocate" not in str(exc):
            raise
        raise BadInputError(f"the model ({model_cfg.arch}, hidden {model_cfg.hidden}, {model_cfg.layers} layers) does "
                            f"not fit in {device.type} memory; use a smaller --hidden or --layers") from exc


def slot_table(model_cfg: ModelConfig, parent: dict[str, Any] | None, speakers: Sequence[str] | None) -> dict[str, int]:
    """The slot table a run trains with: the parent checkpoint's (resume or warm start), extended with the
    corpus's new speakers; {} for an unconditioned model."""
    if not model_cfg.speaker_slots:
        return {}
    inherited = {str(k): int(v) for k, v in ((parent or {}).get("speaker_slots") or {}).items()}
    return extend_slots(inherited, speakers or (), model_cfg.speaker_slots)


class StopSignals:
    """Ctrl-C (SIGINT) and SIGTERM during training: the step in hand finishes and the run stops before the
    next one, so the checkpoint lies between two steps and a resume continues exactly (a signal in the middle
    of a step would leave the carried state, the optimiser or the random stream half advanced). While the
    checkpoint is written a signal is only noted; during the final evaluation it cuts the evaluation short.
    Only the main thread can take signals: elsewhere (the scheduler's worker) this does nothing, and the
    worker stops a run through the progress callback."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self.cut = False  # raise at a signal: a long evaluation may be abandoned, a step may not
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._note)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _note(self, signum: int, frame: object) -> None:
        if self.signal is None:
            self.signal = signum
        if self.cut:
            raise KeyboardInterrupt


def train(
    text: bytes,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    valid_text: bytes | None = None,
    speakers: Sequence[str] | None = None,
    resume: str | Path | None = None,
    init_from: str | Path | None = None,
    corpus_info: dict[str, Any] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> TrainResult:
    """Train on `text` (the last `valid_fraction` held out unless `valid_text` is given) and checkpoint to out_dir.

    `resume` continues a run exactly (same weights as an uninterrupted run on the CPU); `init_from` starts a
    new run from another checkpoint's weights (a warm start for nightly fine-tuning). `speakers`, a chat
    corpus's canonical speaker names (most messages first), get slots when the model has speaker slots.
    """
    torch.set_num_threads(cfg.threads or default_threads())
    ddp = _Distributed(cfg.device)
    device = ddp.device
    out_dir = Path(out_dir)
    if valid_text is None:
        whole = len(text)
        text, valid_text = split_holdout(text, cfg.valid_fraction)
        if len(text) < cfg.seq_len + 1:
            raise BadInputError(f"the text has {whole} bytes: after holding out {len(valid_text)} for validation, "
                                f"{len(text)} are left to train on, fewer than one training window "
                                f"({cfg.seq_len + 1} bytes); give more text or a smaller --seq-len")

    ckpt = load_checkpoint(resume) if resume else None
    if ckpt is not None:
        model_cfg = ModelConfig.from_dict(ckpt["model_config"])
    warm = load_checkpoint(init_from) if init_from is not None else None
    if warm is not None and ModelConfig.from_dict(warm["model_config"]) != model_cfg:
        diff = "; ".join(model_cfg.differences(ModelConfig.from_dict(warm["model_config"])))
        raise BadCheckpointError(f"{init_from}: cannot warm-start from it: its model differs from the one asked "
                                 f"for (asked vs its: {diff}); ask for its model or train from scratch")
    slots = slot_table(model_cfg, ckpt or warm, speakers)
    if model_cfg.speaker_slots and not slots:
        log.warning("the model has speaker slots but the corpus names no speakers: it trains unconditioned")
    train_ids = speaker_ids(text, slots) if model_cfg.speaker_slots else None
    valid_ids = speaker_ids(valid_text, slots) if model_cfg.speaker_slots else None
    batcher = StreamBatcher(text, cfg.batch_size, cfg.seq_len, ddp.rank, ddp.world, speakers=train_ids)

    torch.manual_seed(cfg.seed)
    model = _build_on(model_cfg, device)
    if warm is not None:
        model.load_state_dict(warm["model"])
    # Weight decay on matrices only: not on biases and norms, and not on embedding tables, whose rows
    # (a rare byte, a speaker who writes once a week) get a gradient only when used but would be shrunk
    # towards zero at every step.
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    decay = [p for p in model.parameters() if p.dim() >= 2 and id(p) not in embeddings]
    no_decay = [p for p in model.parameters() if p.dim() < 2 or id(p) in embeddings]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(0.9, 0.99), fused=device.type == "cuda")
    step, elapsed_before, history = 0, 0.0, []
    hidden = initial_state(model_cfg, batcher.streams, device)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        step, elapsed_before = ckpt["step"], ckpt["schedule"]["elapsed"]
        history = list(ckpt.get("history", []))
        _set_rng_state(ckpt["rng"], device)
        saved = ckpt.get("hidden")
        if saved is not None and saved.shape[0] == ddp.world and saved.shape[2] == batcher.streams:
            hidden = saved[ddp.rank].to(device)
    net = torch.nn.parallel.DistributedDataParallel(model) if ddp.active else model
    amp = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")

    def checkpoint(val_bpc: float | None) -> Path:
        all_hidden = ddp.gather(hidden)
        path = out_dir / "last.pt"
        if ddp.is_main:
            save_checkpoint(path, {
                "model_config": model_cfg.to_dict(), "train_config": asdict(cfg),
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "schedule": {"elapsed": elapsed_before + time.monotonic() - t0, "lr": lr},
                "step": step, "rng": _rng_state(device), "hidden": all_hidden.cpu(),
                # Where the run was planned to stop, so that a resume with no new limit finishes the same run.
                "plan": {"last_step": first_step + cfg.steps if cfg.steps else None,
                         "time_budget": elapsed_before + cfg.time_budget if cfg.time_budget else None},
                "val_bpc": val_bpc, "history": history, "corpus": corpus_info or {}, "speaker_slots": slots,
                "device": str(device), "parameters": count_parameters(model), "world_size": ddp.world,
            })
            # The training curve as plain JSON too, so plotting and reports need no torch.
            (out_dir / "history.json").write_text(json.dumps(
                {"model_config": model_cfg.to_dict(), "chars_per_step": batcher.chars_per_step * ddp.world,
                 "history": history}))
        return path

    model.train()
    first_step = step
    t0 = time.monotonic()
    lr, last_val, loss_value, interrupted = cfg.lr, None, float("nan"), False
    with StopSignals() as stop:
        try:
            while True:
                spent = time.monotonic() - t0
                # A resumed run's schedule counts the time trained before: its decay continues over the whole run.
                time_progress = (elapsed_before + spent) / (elapsed_before + cfg.time_budget) if cfg.time_budget else 0.0
                done = (cfg.steps is not None and step - first_step >= cfg.steps) or time_progress >= 1.0
                if ddp.any(done or stop.signal is not None):
                    interrupted = stop.signal is not None
                    break
                lr = lr_at(step, time_progress, cfg)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                batch = batcher.batch(step)
                if batch.reset:
                    hidden = initial_state(model_cfg, batcher.streams, device)
                x = torch.from_numpy(batch.x).to(device, non_blocking=True)
                y = torch.from_numpy(batch.y).to(device, non_blocking=True)
                s = torch.from_numpy(batch.s).to(device, non_blocking=True) if batch.s is not None else None
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    logits, carried = net(*_model_inputs(x, hidden, s))
                    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                step += 1
                hidden = carried.detach().float()  # only with the step: a checkpoint pairs a state with its step
                loss_value = loss.item()
                if not math.isfinite(loss_value):
                    raise BadInputError(f"training diverged at step {step} (loss {loss_value}); try a lower --lr")
                val = None
                if ddp.is_main and cfg.eval_every and step % cfg.eval_every == 0:
                    val = last_val = evaluate_bpc(model, model_cfg, valid_text, device, cfg.eval_chars,
                                                  speakers=valid_ids)
                if ddp.is_main:
                    history.append({"step": step, "loss": loss_value, **({"val_bpc": val} if val is not None else {})})
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                    checkpoint(last_val)
                if on_progress and ddp.is_main:
                    spent = time.monotonic() - t0
                    rate = batcher.chars_per_step * ddp.world * (step - first_step) / max(spent, 1e-9)
                    on_progress(Progress(step - first_step, cfg.steps, spent, cfg.time_budget, loss_value, rate, val, lr))
        except KeyboardInterrupt:  # the progress callback's way to stop a run (the worker's), after a whole step
            interrupted = True
        spent = time.monotonic() - t0
        final_val = last_val if last_val is not None else float("nan")
        if not interrupted and ddp.is_main:  # an interrupted run saves at once: the user is waiting
            try:
                stop.cut = True
                final_val = evaluate_bpc(model, model_cfg, valid_text, device, speakers=valid_ids)
            except KeyboardInterrupt:
                interrupted = True
            finally:
                stop.cut = False
            if history and not interrupted:
                history[-1]["val_bpc"] = final_val
        path = checkpoint(None if math.isnan(final_val) else final_val)
    interrupted = interrupted or stop.signal is not None  # also a signal noted while the last checkpoint was saved
    ddp.close()
    return TrainResult(path, step, final_val, elapsed_before + spent,
                       batcher.chars_per_step * ddp.world * (step - first_step) / max(spent, 1e-9),
                       count_parameters(model), history, str(device), interrupted, ddp.is_main, slots,
                       stop.signal)
