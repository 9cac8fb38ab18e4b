"""Training loop for the benchmark tasks: models, optimizer groups, progress, metrics.

``fastunitary train`` (see :mod:`fastunitary.cli`) is a thin wrapper around :func:`train`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import nn as fnn
from .tasks import copying

MODELS = ("scurnn", "scornn", "lstm", "gru")
TASKS = ("copying",)


@dataclasses.dataclass
class TrainConfig:
    """Everything a run depends on; saved beside its metrics."""

    task: str = "copying"
    model: str = "scurnn"
    hidden: int = 64
    layers: int = 1
    length: int = 100  # copying: the delay T
    convention: str = "scornn"  # copying: marker position, see fastunitary.tasks.copying
    batch: int = 32
    steps: int | None = None  # stop after this many steps ...
    max_seconds: float | None = None  # ... or after this much training time
    lr: float = 1e-3  # Adam, for everything but A and D
    lr_A: float = 1e-4  # RMSProp, for A (scuRNN/scoRNN)
    lr_D: float = 1e-4  # Adagrad, for scuRNN's phases theta
    rho: int | None = None  # scoRNN: number of -1 entries of D
    clip: float = 0.0  # max gradient norm; 0 = no clipping
    eval_every: int = 100
    eval_size: int = 200
    seed: int = 0
    device: str = "cpu"
    backend: str = "auto"
    compile: bool = False


class CopyingModel(nn.Module):
    """One-hot tokens -> recurrent network -> per-step linear readout.

    ``forward``: tokens ``(T, B)`` int64 -> logits ``(T, B, n_classes)``.
    """

    def __init__(self, rnn: nn.Module, rnn_width: int, vocab: int, n_classes: int):
        super().__init__()
        self.vocab = vocab
        self.rnn = rnn
        self.readout = nn.Linear(rnn_width, n_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = F.one_hot(tokens, self.vocab).to(self.readout.weight.dtype)
        return self.readout(self.rnn(x)[0])


def build_rnn(cfg: TrainConfig, input_size: int) -> tuple[nn.Module, int]:
    """The recurrent network named by ``cfg.model`` and the width of its output."""
    if cfg.model == "scurnn":
        rnn = fnn.ScuRNN(input_size, cfg.hidden, cfg.layers, backend=cfg.backend,
                         trainable_h0=True)
        return rnn, rnn.output_size
    if cfg.model == "scornn":
        rnn = fnn.ScoRNN(input_size, cfg.hidden, cfg.layers, backend=cfg.backend,
                         trainable_h0=True, rho=cfg.rho)
        return rnn, rnn.output_size
    if cfg.model == "lstm":
        return nn.LSTM(input_size, cfg.hidden, cfg.layers), cfg.hidden
    if cfg.model == "gru":
        return nn.GRU(input_size, cfg.hidden, cfg.layers), cfg.hidden
    raise ValueError(f"model must be one of {MODELS}, got {cfg.model!r}")


def make_optimizers(model: CopyingModel, cfg: TrainConfig) -> list[torch.optim.Optimizer]:
    """The papers' setup: Adam for the ordinary weights, RMSProp for A, Adagrad for theta."""
    if not hasattr(model.rnn, "param_groups"):
        return [torch.optim.Adam(model.parameters(), lr=cfg.lr)]
    groups = {g["name"]: g["params"] for g in model.rnn.param_groups()}
    opts = [torch.optim.Adam(groups.get("other", []) + list(model.readout.parameters()),
                             lr=cfg.lr)]
    if groups.get("A"):
        opts.append(torch.optim.RMSprop(groups["A"], lr=cfg.lr_A))
    if groups.get("D"):
        opts.append(torch.optim.Adagrad(groups["D"], lr=cfg.lr_D))
    return opts


def _check_config(cfg: TrainConfig) -> None:
    if cfg.task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {cfg.task!r}")
    if cfg.model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {cfg.model!r}")
    if cfg.steps is None and cfg.max_seconds is None:
        raise ValueError("give a budget: steps, max_seconds, or both")
    for name in ("hidden", "layers", "length", "batch", "eval_every", "eval_size"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")


@torch.no_grad()
def evaluate(model: CopyingModel, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Loss over all positions and accuracy on the ten recalled symbols."""
    model.eval()
    logits = model(x)
    model.train()
    loss = F.cross_entropy(logits.flatten(0, 1), y.flatten()).item()
    recall = logits[-copying.N_SYMBOLS :].argmax(-1) == y[-copying.N_SYMBOLS :]
    return {"loss": loss, "accuracy": recall.float().mean().item()}


def train(cfg: TrainConfig, *, out: str | Path | None = None, progress: bool = True) -> dict:
    """Train ``cfg.model`` on ``cfg.task``; return (and write to ``out``) the metrics.

    Metrics: ``task``, ``model``, ``steps``, ``final_train_loss``, ``final_eval_loss``,
    ``final_eval_accuracy``, ``baseline_loss``, ``params``, ``seconds``,
    ``tokens_per_second``, ``config`` and the evaluation ``history``.
    """
    _check_config(cfg)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    device = torch.device(cfg.device)
    rnn, width = build_rnn(cfg, copying.VOCAB)
    model = CopyingModel(rnn, width, copying.VOCAB, copying.N_CLASSES).to(device)
    step_fn = torch.compile(model, fullgraph=True) if cfg.compile else model
    optimizers = make_optimizers(model, cfg)
    baseline = copying.copying_baseline(cfg.length)
    eval_x, eval_y = copying.copying_batch(
        cfg.eval_size, cfg.length, convention=cfg.convention,
        rng=np.random.default_rng(cfg.seed + 1), device=device,
    )
    params = sum(p.numel() for p in model.parameters())
    seq_len = cfg.length + 2 * copying.N_SYMBOLS

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, desc=f"{cfg.model} {cfg.task} T={cfg.length}",
                   unit="step", dynamic_ncols=True)
    history, step, train_seconds, loss_value = [], 0, 0.0, math.nan
    while (cfg.steps is None or step < cfg.steps) and (
        cfg.max_seconds is None or train_seconds < cfg.max_seconds
    ):
        x, y = copying.copying_batch(cfg.batch, cfg.length, convention=cfg.convention,
                                     rng=rng, device=device)
        t0 = time.perf_counter()
        loss = F.cross_entropy(step_fn(x).flatten(0, 1), y.flatten())
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        for opt in optimizers:
            opt.step()
        loss_value = loss.item()
        train_seconds += time.perf_counter() - t0
        step += 1
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"training loss became {loss_value} at step {step}")
        if step % cfg.eval_every == 0:
            history.append({"step": step, "train_loss": loss_value, **evaluate(model, eval_x, eval_y)})
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}", baseline=f"{baseline:.4f}",
                            tok_s=f"{step * cfg.batch * seq_len / train_seconds:.3g}")
    if bar is not None:
        bar.close()
    final = evaluate(model, eval_x, eval_y)
    metrics = {
        "task": cfg.task,
        "model": cfg.model,
        "steps": step,
        "final_train_loss": loss_value,
        "final_eval_loss": final["loss"],
        "final_eval_accuracy": final["accuracy"],
        "baseline_loss": baseline,
        "params": params,
        "seconds": train_seconds,
        "tokens_per_second": step * cfg.batch * seq_len / max(train_seconds, 1e-9),
        "config": dataclasses.asdict(cfg),
        "history": history,
    }
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
