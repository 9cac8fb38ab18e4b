"""Training loop for the benchmark tasks: tasks, models, optimizer groups, progress, metrics.

``fastunitary train`` (see :mod:`fastunitary.cli`) is a thin wrapper around :func:`train`.
"""

from __future__ import annotations

import abc
import csv
import dataclasses
import json
import math
import numbers
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import nn as fnn
from ._backend import resolve_backend
from .tasks import adding, copying, digits, fashion_mnist, mnist_1d
from .tasks.splits import TASKS, split_streams

#: the MomentumRNN family's LSTMs, by their command-line names
MOMENTUM_LSTMS = {"momentumlstm": fnn.MomentumLSTM, "adamlstm": fnn.AdamLSTM,
                  "rmsproplstm": fnn.RMSPropLSTM, "nesterovlstm": fnn.NesterovLSTM}
#: SBO-RNN's optimizers, by their command-line names
SBO_RNNS = {"sbornn": "gd", "sbornn_hb": "heavy_ball", "sbornn_nag": "nesterov"}
MODELS = ("scurnn", "scornn", "enrnn", "lstm", "gru", *MOMENTUM_LSTMS, "momentumrnn", *SBO_RNNS)


@dataclasses.dataclass
class TrainConfig:
    """Everything a run depends on; saved beside its metrics."""

    task: str = "copying"
    model: str = "scurnn"
    hidden: int = 64  # hidden size (complex state size for scurnn; unitary_size for enrnn)
    short: int = 32  # enrnn: short_size
    layers: int = 1
    length: int = 100  # copying: the delay T; adding: the sequence length L
    convention: str = "scornn"  # copying: marker position, see fastunitary.tasks.copying
    batch: int = 32
    steps: int | None = None  # stop after this many steps ...
    max_seconds: float | None = None  # ... or after this much training time
    lr: float = 1e-3  # everything but A and D (Adam; RMSProp for enrnn)
    lr_A: float = 1e-4  # RMSProp, for A (scuRNN/scoRNN) or A1 (ENRNN)
    lr_D: float = 1e-4  # Adagrad, for scuRNN's phases theta
    rho: int | None = None  # scoRNN: number of -1 entries of D; ENRNN: of D1
    clip: float = 0.0  # max gradient norm; 0 = no clipping
    eval_every: int = 100
    eval_size: int = 200
    seed: int = 0
    device: str = "cpu"
    backend: str = "auto"
    compile: bool = False
    mu: float = 0.6  # MomentumRNN family: momentum (MNIST recipe 0.6)
    momentum_step: float = 0.6  # MomentumRNN family: s (MNIST recipe 0.6)
    restart: int = 2  # NesterovLSTM: restart period R
    eta: float = 0.05  # SBO-RNN: inner step size (mu is --mu)
    inner_steps: int = 1  # SBO-RNN: optimizer iterations per time step (K)
    checkpoint_every: int = 0  # with an output folder: checkpoint every N steps (0: at each evaluation)
    resume: str | None = None  # a checkpoint.pt to continue from (bit-exact on CPU)


#: options a resumed run may change; every other one must equal the checkpoint's
RESUMABLE_CHANGES = frozenset({"steps", "max_seconds", "resume", "checkpoint_every", "eval_every"})
CHECKPOINT_FORMAT = 1


class Task(abc.ABC):
    """A benchmark task: batches, how the model reads them, loss, metrics, baseline."""

    name: str
    input_size: int
    output_size: int
    per_step: bool  # one prediction per step (copying) or one after the last (adding)
    baseline: float

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg

    @abc.abstractmethod
    def batch(self, size: int, rng: np.random.Generator, device) -> tuple[torch.Tensor, torch.Tensor]:
        """A fresh batch ``(x, y)``, time-major."""

    def encode(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return x.to(dtype)

    @abc.abstractmethod
    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The training loss of the model's output against the targets."""

    def metrics(self, out: torch.Tensor, y: torch.Tensor) -> dict:
        return {"loss": self.loss(out, y).item()}

    @property
    def tokens_per_sequence(self) -> int:
        return self.cfg.length


class CopyingTask(Task):
    """Copying over a delay T (one-hot tokens in, a class per step out)."""

    name, input_size, output_size, per_step = "copying", copying.VOCAB, copying.N_CLASSES, True

    def __init__(self, cfg):
        super().__init__(cfg)
        self.baseline = copying.copying_baseline(cfg.length)

    @property
    def tokens_per_sequence(self) -> int:
        return self.cfg.length + 2 * copying.N_SYMBOLS

    def batch(self, size, rng, device):
        return copying.copying_batch(size, self.cfg.length, convention=self.cfg.convention,
                                     rng=rng, device=device)

    def encode(self, x, dtype):
        return F.one_hot(x, copying.VOCAB).to(dtype)

    def loss(self, out, y):
        return F.cross_entropy(out.flatten(0, 1), y.flatten())

    def metrics(self, out, y):
        recall = out[-copying.N_SYMBOLS:].argmax(-1) == y[-copying.N_SYMBOLS:]
        return {"loss": self.loss(out, y).item(), "accuracy": recall.float().mean().item()}


class AddingTask(Task):
    """The adding problem of length L (two channels in, one value out after the last step)."""

    name, input_size, output_size, per_step = "adding", 2, 1, False
    baseline = adding.BASELINE

    def batch(self, size, rng, device):
        return adding.adding_batch(size, self.cfg.length, rng=rng, device=device)

    def loss(self, out, y):
        return F.mse_loss(out, y)


class ImageSequenceTask(Task):
    """A fixed image data set read one pixel per step, sequential or permuted; a class
    after the last step. Training batches are drawn from the train split; evaluation uses
    the test split (see the subclasses for how much of it)."""

    input_size, per_step = 1, False
    #: the task-name prefix of the permuted variant
    variant_prefix = "permuted_"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.permuted = cfg.task.startswith(self.variant_prefix)
        self._train = None

    @property
    def tokens_per_sequence(self) -> int:
        return self.length

    @abc.abstractmethod
    def arrays(self, split: str):
        """``x`` ``(n, T, 1)`` float32, ``y`` ``(n,)`` int64."""

    def tensors(self, split: str, device):
        x, y = self.arrays(split)
        return (torch.from_numpy(x).transpose(0, 1).contiguous().to(device),
                torch.from_numpy(y).to(device))

    def batch(self, size, rng, device):
        if self._train is None or self._train[0].device != torch.device(device):
            self._train = self.tensors("train", device)
        x, y = self._train
        idx = torch.from_numpy(rng.integers(0, y.shape[0], size=size)).to(y.device)
        return x[:, idx], y[idx]

    def eval_set(self, device):
        return self.tensors("test", device)

    def loss(self, out, y):
        return F.cross_entropy(out, y)

    def metrics(self, out, y):
        return {"loss": self.loss(out, y).item(),
                "accuracy": (out.argmax(-1) == y).float().mean().item()}


class DigitsTask(ImageSequenceTask):
    """Sequential (or permuted) 8x8 digits (fastunitary.tasks.digits): the first half of
    scikit-learn's images trains, the whole second half tests (``eval_size`` is ignored).
    ``length`` is 64."""

    name, output_size, length = "digits", digits.N_CLASSES, digits.LENGTH
    baseline = math.log(digits.N_CLASSES)  # cross-entropy of a uniform guess

    def arrays(self, split):
        return digits.digits_arrays(split, permuted=self.permuted, seed=self.cfg.seed)


class FashionMNISTTask(ImageSequenceTask):
    """Sequential (or permuted) Fashion-MNIST, T = 784 (fastunitary.tasks.fashion_mnist):
    60 000 training images; evaluation on the first ``eval_size`` of the 10 000 test images
    (all of them with ``--eval-size 10000``)."""

    name, output_size, length = "fashion_mnist", fashion_mnist.N_CLASSES, fashion_mnist.LENGTH
    baseline = math.log(fashion_mnist.N_CLASSES)

    def arrays(self, split):
        x, y = fashion_mnist.fashion_mnist_arrays(split, permuted=self.permuted,
                                                  seed=self.cfg.seed)
        if split == "test":
            x, y = x[: self.cfg.eval_size], y[: self.cfg.eval_size]
        return x, y


class MNIST1DTask(ImageSequenceTask):
    """MNIST-1D (fastunitary.tasks.mnist_1d), T = 40: 4000 training and 1000 test
    sequences (all of them evaluated), the published data set (generator seed 42);
    ``shuffled_mnist1d`` permutes time."""

    name, output_size, length = "mnist1d", mnist_1d.N_CLASSES, mnist_1d.LENGTH
    baseline = math.log(mnist_1d.N_CLASSES)
    variant_prefix = "shuffled_"

    def arrays(self, split):
        return mnist_1d.mnist1d_arrays(split, shuffled=self.permuted)


TASK_CLASSES = {"copying": CopyingTask, "adding": AddingTask, "digits": DigitsTask,
                "permuted_digits": DigitsTask, "fashion_mnist": FashionMNISTTask,
                "permuted_fashion_mnist": FashionMNISTTask, "mnist1d": MNIST1DTask,
                "shuffled_mnist1d": MNIST1DTask}


def length_label(cfg: TrainConfig) -> str:
    """The sequence length of a run as people name it: copying's delay T, adding's L, or
    the fixed T of a data set."""
    return {"copying": f"T={cfg.length}", "adding": f"L={cfg.length}"}.get(
        cfg.task) or f"T={TASK_CLASSES[cfg.task].length}"


class SequenceModel(nn.Module):
    """Task input -> recurrent network -> linear readout (every step, or the last one)."""

    def __init__(self, rnn: nn.Module, rnn_width: int, task: Task):
        super().__init__()
        self.task = task
        self.rnn = rnn
        self.readout = nn.Linear(rnn_width, task.output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.rnn(self.task.encode(x, self.readout.weight.dtype))[0]
        if self.task.per_step:
            return self.readout(h)  # (T, B, classes)
        out = self.readout(h[-1])  # (B, classes)
        return out.squeeze(-1) if self.task.output_size == 1 else out


def build_rnn(cfg: TrainConfig, input_size: int) -> tuple[nn.Module, int]:
    """The recurrent network named by ``cfg.model`` and the width of its output."""
    if cfg.model == "scurnn":
        rnn = fnn.ScuRNN(input_size, cfg.hidden, cfg.layers, backend=cfg.backend,
                         trainable_h0=True)
    elif cfg.model == "scornn":
        rnn = fnn.ScoRNN(input_size, cfg.hidden, cfg.layers, backend=cfg.backend,
                         trainable_h0=True, rho=cfg.rho)
    elif cfg.model == "enrnn":
        rnn = fnn.ENRNN(input_size, cfg.hidden, cfg.short, cfg.layers, backend=cfg.backend,
                        num_negative=cfg.rho)
    elif cfg.model == "lstm":
        return nn.LSTM(input_size, cfg.hidden, cfg.layers), cfg.hidden
    elif cfg.model == "gru":
        return nn.GRU(input_size, cfg.hidden, cfg.layers), cfg.hidden
    elif cfg.model in MOMENTUM_LSTMS:
        kwargs = dict(step=cfg.momentum_step, backend=cfg.backend)
        if cfg.model in ("momentumlstm", "adamlstm"):
            kwargs["mu"] = cfg.mu
        if cfg.model == "nesterovlstm":
            kwargs["restart"] = cfg.restart
        rnn = MOMENTUM_LSTMS[cfg.model](input_size, cfg.hidden, cfg.layers, **kwargs)
    elif cfg.model == "momentumrnn":
        rnn = fnn.MomentumRNN(input_size, cfg.hidden, cfg.layers, mu=cfg.mu,
                              step=cfg.momentum_step, backend=cfg.backend)
    elif cfg.model in SBO_RNNS:
        method = SBO_RNNS[cfg.model]
        rnn = fnn.SBORNN(input_size, cfg.hidden, cfg.layers, method=method, eta=cfg.eta,
                         mu=None if method == "gd" else cfg.mu, steps=cfg.inner_steps,
                         backend=cfg.backend)
    else:
        raise ValueError(f"model must be one of {MODELS}, got {cfg.model!r}")
    return rnn, rnn.output_size


def make_optimizers(model: SequenceModel, cfg: TrainConfig) -> list[torch.optim.Optimizer]:
    """The papers' setups.

    scuRNN/scoRNN: Adam for the ordinary weights, RMSProp for A, Adagrad for theta.
    ENRNN: RMSProp for everything, A1 with its own rate. LSTM/GRU: Adam.
    """
    if not hasattr(model.rnn, "param_groups"):
        return [torch.optim.Adam(model.parameters(), lr=cfg.lr)]
    groups = {g["name"]: g["params"] for g in model.rnn.param_groups()}
    rest = groups.get("other", []) + list(model.readout.parameters())
    if cfg.model == "enrnn":
        return [torch.optim.RMSprop(rest, lr=cfg.lr), torch.optim.RMSprop(groups["A"], lr=cfg.lr_A)]
    opts = [torch.optim.Adam(rest, lr=cfg.lr)]
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
    if not cfg.eta > 0:
        raise ValueError(f"eta must be > 0, got {cfg.eta}")
    for name in ("lr", "lr_A", "lr_D"):  # torch's own message would not say which one
        if not 0 < getattr(cfg, name) < math.inf:
            raise ValueError(f"{name} must be > 0 and finite, got {getattr(cfg, name)}")
    # counts given as 2.5 would run as 3 and be reported as asked
    counts = ("hidden", "short", "layers", "length", "batch", "eval_every", "eval_size",
              "inner_steps", "checkpoint_every", "seed") + (("steps",) if cfg.steps is not None else ())
    for name in counts:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError(f"{name} must be an int, got {value!r}")
    for name in ("hidden", "short", "layers", "length", "batch", "eval_every", "eval_size",
                 "inner_steps"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.checkpoint_every < 0:
        raise ValueError(f"checkpoint_every must be >= 0, got {cfg.checkpoint_every}")
    # a budget that runs no step would report an untrained model as a result
    if cfg.steps is not None and cfg.steps < 1:
        raise ValueError(f"steps must be >= 1, got {cfg.steps}")
    if cfg.max_seconds is not None and not cfg.max_seconds > 0:
        raise ValueError(f"max_seconds must be > 0, got {cfg.max_seconds}")
    if not cfg.clip >= 0:  # 0 turns clipping off; a negative norm would silently do the same
        raise ValueError(f"clip must be >= 0 (0: no clipping), got {cfg.clip}")
    if not 0 <= cfg.seed < 2**64:  # torch.manual_seed's range
        raise ValueError(f"seed must be >= 0 and < 2**64, got {cfg.seed}")
    check_device(cfg.device)
    _check_backend(cfg)


def check_device(name: str) -> None:
    """Raise a ValueError naming ``device`` when this machine cannot train on it (torch's own
    RuntimeError or AssertionError comes from deep inside the first tensor put there)."""
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"device {name!r} is not a device: {e}") from None
    if device.type == "cuda":
        # checked without touching a GPU: under torchrun every rank would start a CUDA
        # context on GPU 0 before picking its own
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            why = ("this PyTorch is built without CUDA" if not torch.backends.cuda.is_built()
                   else f"{count} CUDA device(s) visible")
            raise ValueError(f"device {name!r} is not available here: {why}")
    elif device.type == "meta":  # passes the probe below, then fails at the first .item()
        raise ValueError(f"device {name!r} holds no data: training needs a real device")
    elif device.type != "cpu":
        try:
            torch.empty(0, device=device)
        except (RuntimeError, AssertionError) as e:
            why = str(e).strip().split("\n")[0].split(". ")[0]  # torch's runs on for a page
            raise ValueError(f"device {name!r} is not available here: "
                             f"{why or type(e).__name__}") from None


def _check_backend(cfg: TrainConfig) -> None:
    """``backend="triton"`` fails inside the first step otherwise, where ``torch.compile``
    wraps the reason in its own error: ask the dispatch now, for the op every fastunitary
    model but SBO-RNN runs (which refuses "triton" when it is built). LSTM and GRU are
    torch's and take no backend."""
    if cfg.model not in ("lstm", "gru"):
        resolve_backend("recurrence", cfg.backend, torch.device(cfg.device))


def launch_rank() -> int:
    """This process's rank as ``torchrun`` set it (0 without a launcher), known before the
    process group forms."""
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """Rank 0 of the process group :func:`train` ran in, or the only process: the one that
    writes outputs and reports (the group stays after a run, see
    :meth:`Distributed.close`)."""
    import torch.distributed as td

    return not (td.is_available() and td.is_initialized()) or td.get_rank() == 0


def prepare_output(out: Path) -> Path:
    """Create the output folder, or say why it cannot be: before the first step, not after
    the whole run has trained."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"out: cannot create the folder {out}: {e.strerror}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ValueError(f"out: cannot write into the folder {out}")
    return out


@torch.no_grad()
def evaluate(model: SequenceModel, x: torch.Tensor, y: torch.Tensor) -> dict:
    """The task's metrics on a fixed evaluation set (loss; accuracy where it applies)."""
    model.eval()
    out = model(x)
    model.train()
    return model.task.metrics(out, y)


def train(cfg: TrainConfig, *, out: str | Path | None = None, progress: bool = True) -> dict:
    """Train ``cfg.model`` on ``cfg.task``; return (and write to ``out``) the metrics.

    Metrics: ``task``, ``model``, ``steps``, ``final_train_loss``, ``final_eval_loss``,
    ``final_eval_accuracy`` and ``best_eval_accuracy`` (tasks scored by accuracy),
    ``baseline_loss``, ``params``, ``seconds``,
    ``tokens_per_second``, ``config`` and the evaluation ``history`` (every ``eval_every``
    steps, and the last step).
    """
    _check_config(cfg)
    ckpt = None if cfg.resume is None else read_checkpoint(cfg)
    # rank 0 writes the outputs; its folder is checked before the process group forms, so a
    # bad --out ends the launch with this error, not with the other ranks' broken collectives
    out = None if out is None else Path(out)
    if out is not None and launch_rank() == 0:
        prepare_output(out)
    dist = Distributed.from_environment(cfg)
    # the group's rank decides (a group the caller formed may not set RANK); creating the
    # folder again is a no-op
    out = prepare_output(out) if out is not None and dist.is_main else None
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)  # the same on every rank: each takes its shard
    # the concrete device ("cuda" -> "cuda:0", or this rank's GPU under torchrun)
    device = dist.device if dist.active else torch.empty(0, device=cfg.device).device
    task = TASK_CLASSES[cfg.task](cfg)
    rnn, width = build_rnn(cfg, task.input_size)
    model = SequenceModel(rnn, width, task).to(device)
    step_fn = dist.wrap(model)
    if cfg.compile:
        step_fn = torch.compile(step_fn, fullgraph=not dist.active)
    optimizers = make_optimizers(model, cfg)
    if hasattr(task, "eval_set"):  # a fixed test set
        eval_x, eval_y = task.eval_set(device)
    else:
        # not default_rng(seed + 1): that is the next seed's training stream
        eval_x, eval_y = task.batch(cfg.eval_size, split_streams(cfg.seed)["test"], device)
    params = sum(p.numel() for p in model.parameters())
    tokens = cfg.batch * task.tokens_per_sequence
    state = {"step": 0, "train_seconds": 0.0, "loss_value": math.nan, "history": []}
    if ckpt is not None:
        state = restore_checkpoint(ckpt, model, optimizers, rng)
    every = cfg.checkpoint_every or cfg.eval_every

    bar = None
    if progress and dist.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=state["step"], unit="step", dynamic_ncols=True,
                   desc=f"{cfg.model} {cfg.task} {length_label(cfg)}")
    history, step = state["history"], state["step"]
    train_seconds, loss_value = state["train_seconds"], state["loss_value"]
    while dist.agree((cfg.steps is None or step < cfg.steps) and (
        cfg.max_seconds is None or train_seconds < cfg.max_seconds
    )):
        x, y = dist.shard(*task.batch(cfg.batch, rng, device), per_step=task.per_step)
        t0 = time.perf_counter()
        loss = task.loss(step_fn(x), y)
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        for opt in optimizers:
            opt.step()
        loss_value = dist.mean(loss.detach()).item()  # the global batch's loss
        train_seconds += time.perf_counter() - t0
        step += 1
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"training loss became {loss_value} at step {step}")
        if step % cfg.eval_every == 0:
            history.append(_history_row(step, train_seconds, loss_value,
                                        evaluate(model, eval_x, eval_y)))
        if out is not None and step % every == 0:
            save_checkpoint(out / "checkpoint.pt", cfg, model, optimizers, rng,
                            step=step, train_seconds=train_seconds, loss_value=loss_value,
                            history=history)
        if bar is not None:
            bar.update(1)
            run_seconds = max(train_seconds - state["train_seconds"], 1e-9)
            shown = {"loss": f"{loss_value:.4f}", "baseline": f"{task.baseline:.4f}"}
            if history and "eval_accuracy" in history[-1]:
                shown["eval_acc"] = f"{history[-1]['eval_accuracy']:.3f}"
            shown["tok_s"] = f"{(step - state['step']) * tokens / run_seconds:.3g}"
            bar.set_postfix(shown)
    if bar is not None:
        bar.close()
    del step_fn  # the DistributedDataParallel wrapper goes before its process group
    dist.close()
    final = evaluate(model, eval_x, eval_y)
    # the curves end at the last step even when eval_every does not divide it; checkpoints
    # keep the regular evaluations only, so that a resumed run's history is the straight one's
    curve = history
    if not history or history[-1]["step"] != step:
        curve = history + [_history_row(step, train_seconds, loss_value, final)]
    metrics = {
        "task": cfg.task,
        "model": cfg.model,
        "steps": step,
        "final_train_loss": loss_value,
        "final_eval_loss": final["loss"],
        "baseline_loss": task.baseline,
        "params": params,
        "seconds": train_seconds,
        "tokens_per_second": step * tokens / max(train_seconds, 1e-9),
        "config": dataclasses.asdict(cfg),
        "world_size": dist.world,  # processes (torchrun), each on batch / world_size sequences
        "history": curve,
    }
    if "accuracy" in final:
        metrics["final_eval_accuracy"] = final["accuracy"]
        metrics["best_eval_accuracy"] = max(
            [final["accuracy"]] + [h["eval_accuracy"] for h in history])
    if out is not None:
        if step % every:  # the loop saved this step already otherwise
            save_checkpoint(out / "checkpoint.pt", cfg, model, optimizers, rng, step=step,
                            train_seconds=train_seconds, loss_value=loss_value,
                            history=history)
        write_outputs(out, metrics)
    return metrics


def _history_row(step: int, seconds: float, train_loss: float, evaluation: dict) -> dict:
    """One evaluation of the history (a row of metrics.csv)."""
    return {"step": step, "seconds": seconds, "train_loss": train_loss,
            **{f"eval_{k}": v for k, v in evaluation.items()}}


class Distributed:
    """Data parallelism through PyTorch's own engine, when launched by ``torchrun``.

    Every rank draws the same global batch from the same generator and trains on its own
    contiguous slice of ``B / world_size`` sequences; ``DistributedDataParallel`` averages
    the gradients, so the run follows the single-process run on the global batch (up to the
    rounding of the all-reduce). The tasks draw batches from a seeded generator rather than
    iterating a dataset, so the slice takes the place of a ``DistributedSampler``. Rank 0
    alone writes outputs and shows progress. Backend: gloo on CPU, NCCL on CUDA.
    """

    def __init__(self, rank: int = 0, world: int = 1, device: str = "cpu"):
        self.rank, self.world = rank, world
        self.device = torch.device(device)  # where collectives' tensors live (NCCL: CUDA)

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls, cfg: TrainConfig) -> Distributed:
        import os

        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as td

        if cfg.batch % world:
            raise ValueError(f"batch ({cfg.batch}) must be a multiple of the number of "
                             f"processes ({world}): each trains on an equal slice")
        if not td.is_initialized():  # else the caller's, or an earlier run's (see close)
            td.init_process_group("nccl" if cfg.device.startswith("cuda") else "gloo")
        device = cfg.device
        if cfg.device.startswith("cuda"):
            # one GPU per process; cfg.device stays as given, so checkpoints resume anywhere
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            device = f"cuda:{local}"
        return cls(td.get_rank(), td.get_world_size(), device)

    def wrap(self, model: nn.Module) -> nn.Module:
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model)

    def shard(self, x: torch.Tensor, y: torch.Tensor, *, per_step: bool):
        """This rank's slice of the global batch (batch is dim 1 of ``x``, and of ``y`` when
        the task scores every step, else dim 0)."""
        if not self.active:
            return x, y
        b = x.shape[1] // self.world
        sl = slice(self.rank * b, (self.rank + 1) * b)
        return x[:, sl], (y[:, sl] if per_step else y[sl])

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        if self.active:
            import torch.distributed as td

            t = t.clone()
            td.all_reduce(t)
            t /= self.world
        return t

    def agree(self, go_on: bool) -> bool:
        """Every rank stops at the same step (time budgets differ between processes)."""
        if not self.active:
            return go_on
        import torch.distributed as td

        flag = torch.tensor([0 if go_on else 1], device=self.device)
        td.all_reduce(flag)
        return int(flag) == 0

    def close(self) -> None:
        """Waits until every rank is done with the run's collectives. The process group
        stays for the rest of the process, also when this run started it: a group torn down
        and started again under one ``torchrun`` launch fails at random (gloo's "connect
        full mesh ... connection refused"), which broke a second ``train()`` call (a seed
        sweep in one script). The next call finds it and uses it."""
        if self.active:
            import torch.distributed as td

            td.barrier()


def save_checkpoint(path: Path, cfg: TrainConfig, model: nn.Module, optimizers, rng, **state) -> None:
    """Everything a run needs to continue exactly: weights (and buffers such as ENRNN's
    sticky switch), optimizer states, the batch generator's and torch's RNG states, the
    step count, training time and evaluation history. Written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT, "config": dataclasses.asdict(cfg),
        "model": model.state_dict(), "optimizers": [o.state_dict() for o in optimizers],
        "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), **state,
    }
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def read_checkpoint(cfg: TrainConfig) -> dict:
    """The :func:`save_checkpoint` file ``cfg.resume``, checked against ``cfg`` before
    anything is built: a ValueError says why it cannot be resumed."""
    path = Path(cfg.resume)
    if not path.is_file():
        raise ValueError(f"resume: no checkpoint at {path}")
    # on the CPU: load_state_dict copies into the parameters wherever they live, and the
    # RNG state must stay a CPU byte tensor
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # whatever the file holds: pickle, zip and EOF errors, and more
        raise ValueError(f"resume: {path} is not a fastunitary checkpoint (unreadable: "
                         f"{type(e).__name__}: {e})") from None
    fmt = ckpt.get("format") if isinstance(ckpt, dict) else None
    if fmt != CHECKPOINT_FORMAT:
        raise ValueError(f"resume: {path} is not a fastunitary checkpoint (format {fmt!r})")
    mine = dataclasses.asdict(cfg)
    changed = sorted(k for k, v in ckpt["config"].items()
                     if k not in RESUMABLE_CHANGES and mine.get(k) != v)
    if changed:
        detail = ", ".join(f"{k}: {ckpt['config'][k]!r} -> {mine.get(k)!r}" for k in changed)
        raise ValueError(f"resume: the run differs from the checkpoint's in {detail}; only "
                         f"{', '.join(sorted(RESUMABLE_CHANGES))} may change")
    # a budget already spent would run no step and report the checkpoint under a config
    # that does not describe it
    done, spent = ckpt["step"], ckpt["train_seconds"]
    if (cfg.steps is not None and cfg.steps <= done) or (
            cfg.max_seconds is not None and cfg.max_seconds <= spent):
        raise ValueError(f"resume: the checkpoint has trained {done} steps in {spent:.1f} s; "
                         f"give a budget beyond that (steps > {done}, max_seconds > "
                         f"{spent:.1f})")
    return ckpt


def restore_checkpoint(ckpt: dict, model: nn.Module, optimizers, rng) -> dict:
    """Restore a :func:`read_checkpoint` into a freshly built run; return its counters."""
    model.load_state_dict(ckpt["model"])
    for opt, st in zip(optimizers, ckpt["optimizers"], strict=True):
        opt.load_state_dict(st)
    rng.bit_generator.state = ckpt["numpy_rng"]
    torch.set_rng_state(ckpt["torch_rng"])
    return {k: ckpt[k] for k in ("step", "train_seconds", "loss_value", "history")}


def write_outputs(out: Path, metrics: dict) -> None:
    """``metrics.json``, ``metrics.csv`` (one row per evaluation) and ``curves.png``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    history = metrics["history"]
    # the header even without a row: the columns do not depend on whether evaluations ran
    known = ["step", "seconds", "train_loss", "eval_loss"]
    if "final_eval_accuracy" in metrics:
        known.append("eval_accuracy")
    columns = list(dict.fromkeys(known + [k for h in history for k in h]))
    with open(out / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(history)
    plot_curves(metrics, out / "curves.png")


def plot_curves(metrics: dict, path: Path) -> None:
    """Evaluation loss (and accuracy, where the task has one) against steps, baseline dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = metrics["history"]
    acc = any("eval_accuracy" in r for r in h)
    fig, axes = plt.subplots(1, 2 if acc else 1, figsize=(11 if acc else 6, 4), squeeze=False)
    ax = axes[0][0]
    ax.plot([r["step"] for r in h], [r["eval_loss"] for r in h], marker=".", label="eval loss")
    ax.plot([r["step"] for r in h], [r["train_loss"] for r in h], alpha=0.5, label="train loss")
    ax.axhline(metrics["baseline_loss"], color="gray", linestyle="--", label="baseline")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    if acc:
        ax = axes[0][1]
        ax.plot([r["step"] for r in h], [r.get("eval_accuracy") for r in h], marker=".")
        ax.set_xlabel("step")
        ax.set_ylabel("eval accuracy")
    fig.suptitle(f"{metrics['model']} on {metrics['task']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
