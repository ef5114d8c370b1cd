"""The capstone's training command: ``python -m course_pkg.glow train ...`` (chapter 6).

One command for every machine. It picks the device itself (the GPU where there is one) and runs
unchanged on a CPU, on one GPU, and under ``torchrun --nproc_per_node=N`` on several, where each
process trains a copy of the model on its share of every batch and PyTorch's
DistributedDataParallel averages the gradients::

    python -m course_pkg.glow train --dataset mnist --steps 5000 --out runs/glow
    torchrun --nproc_per_node=4 -m course_pkg.glow train --dataset mnist --steps 5000 --bf16 --compile

The objective is the papers' bits per dimension in the 8-bit space,
``bpd = (-log p((k + u) / 256) + D log 256) / (D log 2)`` with uniform noise ``u`` (dequantization,
:mod:`course_pkg.preprocessing`). The batch of step ``s`` (its images and its noise) is drawn from
a generator seeded by ``(seed, s)``, the same on every process, and process ``r`` of ``N`` takes the
``r``-th of ``N`` equal slices: so ``N`` processes see exactly the batches one process would, and a
run resumed from a checkpoint sees exactly the batches it would have seen. ActNorm's data-dependent
initialisation runs once, on the first global batch (:meth:`~course_pkg.flows.elementwise.ActNorm.initialize`
adds up the statistics over the processes), and never again after a resume: its ``initialized``
flags are in the checkpoint. The learning rate warms up linearly over ``warmup_steps``, so the
first steps, where ActNorm has just set every scale and Adam has no estimate of the gradients'
size yet, cannot throw the model into overflow.

At the end, process 0 writes to ``--out``: ``checkpoint.pt`` (also every ``--checkpoint-every``
steps; the next run with the same ``--out`` resumes from it), ``samples.png`` (samples at two
temperatures) and ``results.json`` (the figures: test bits/dim, images per second, peak memory, the
loss of every step, the hardware).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn

from course_pkg.data import train_validation
from course_pkg.devices import default_device
from course_pkg.flows import ActNorm
from course_pkg.models import Glow
from course_pkg.preprocessing import discrete_bits_per_dim
from course_pkg.train import progress_bar

NUM_BINS = 256
HELD_OUT_WHERE_ONLY_TEST_SPLIT = 1000
"""Where only a data set's test split exists (no network), this many of its images are held out for evaluation."""
ARCHITECTURE = ("dataset", "num_levels", "steps_per_level", "hidden_channels", "batch_size", "seed")
"""The settings a resumed run must share with the checkpoint it resumes."""


@dataclass
class GlowConfig:
    """Every setting of a training run; the command line's options have the same names (``--steps-per-level``)."""

    dataset: str = "mnist"
    out: str = "runs/glow"
    num_levels: int = 2
    steps_per_level: int = 8
    hidden_channels: int = 128
    batch_size: int = 256  # the global batch, over all processes
    steps: int = 5000
    time_budget: float | None = None  # seconds of training, after which the run stops early
    lr: float = 1e-3
    warmup_steps: int = 200
    max_grad_norm: float = 50.0
    bf16: bool = False
    compile: bool = False
    seed: int = 0
    checkpoint_every: int = 1000
    eval_images: int | None = None  # evaluate on the first this many held-out images (all by default)
    eval_batch_size: int = 500
    temperatures: tuple[float, ...] = (1.0, 0.7)
    num_samples: int = 64
    device: str | None = None
    progress: bool = True
    resume: bool = True


OPTION_HELP = {
    "dataset": "mnist or cifar10 (where only a test split exists: all but 1,000 of it to train, those to evaluate)",
    "out": "folder for checkpoint.pt, samples.png and results.json; a checkpoint there is resumed",
    "num_levels": "levels of the multi-scale architecture (MNIST's 28 x 28: at most 2; CIFAR-10: 3 as in Glow)",
    "steps_per_level": "steps of flow (ActNorm, 1x1 convolution, coupling) in each level",
    "hidden_channels": "width of the coupling networks",
    "batch_size": "the global batch, divided among the processes under torchrun",
    "steps": "optimiser steps in all, counting those of a resumed run",
    "time_budget": "seconds of training after which the run stops early (default: no limit)",
    "lr": "Adam's learning rate after the warm-up",
    "warmup_steps": "steps over which the learning rate rises linearly from lr / warmup_steps to lr",
    "max_grad_norm": "the gradient's global norm is clipped to this",
    "bf16": "train under bfloat16 autocast (evaluation stays in float32)",
    "compile": "compile the objective with torch.compile",
    "seed": "seeds the model's initialisation and every batch and its dequantization noise",
    "checkpoint_every": "steps between checkpoints (one is also written at the end)",
    "eval_images": "evaluate on the first this many held-out images (default: all)",
    "eval_batch_size": "batch of the evaluation",
    "temperatures": "temperatures of the sample grids in samples.png",
    "num_samples": "samples per grid",
    "device": "cpu, cuda, cuda:1, ... (default: the GPU where there is one)",
    "progress": "show a progress bar with the running bits/dim",
    "resume": "resume from --out/checkpoint.pt when it exists",
}


@dataclass
class Process:
    """Where this process runs: its rank among ``world_size`` processes, and its device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def train_glow(config: GlowConfig) -> dict:
    """Train (or resume) a Glow as ``config`` says, evaluate it, write the outputs; returns the figures of ``results.json``.

    Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) it joins the process group (NCCL on
    GPUs, gloo on CPUs) and leaves it at the end; every process returns the same figures.
    """
    process = _join_processes(config)
    try:
        return _train(config, process)
    finally:
        if process.world_size > 1:
            dist.destroy_process_group()


def _train(config: GlowConfig, process: Process) -> dict:
    if config.batch_size % process.world_size:
        raise ValueError(
            f"the global batch ({config.batch_size}) must divide evenly among the {process.world_size} processes"
        )
    train_set, test_set, source = _datasets(config.dataset)
    if config.progress and process.is_main:
        print(source, file=sys.stderr)  # where the training and the held-out images come from
    shape = tuple(train_set.shape[1:])
    dimension = math.prod(shape)
    torch.manual_seed(config.seed)
    model = Glow(shape, config.num_levels, config.steps_per_level, config.hidden_channels).to(process.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    warmup = max(1, config.warmup_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
    out = Path(config.out)
    checkpoint_path = out / "checkpoint.pt"
    start, losses, elapsed = 0, [], 0.0
    if config.resume and checkpoint_path.exists():
        start, losses, elapsed = _load_checkpoint(checkpoint_path, config, model, optimizer, scheduler, process)
    if not all(bool(m.initialized) for m in model.modules() if isinstance(m, ActNorm)):
        with torch.no_grad():  # ActNorm's data-dependent initialisation, on the first global batch
            model.log_prob(batch(train_set, 0, config, process))

    objective: nn.Module = BitsPerDim(model, dimension)
    if process.world_size > 1:
        device_ids = [process.device.index] if process.device.type == "cuda" else None
        objective = nn.parallel.DistributedDataParallel(objective, device_ids=device_ids)
    if config.compile:
        objective = torch.compile(objective)

    model.train()
    bar = progress_bar(config.steps, "glow", enabled=config.progress and process.is_main, start=start)
    running, timed_from, timed_images = None, None, 0
    clock = time.perf_counter()
    for step in bar:
        x = batch(train_set, step, config, process)
        with torch.autocast(process.device.type, dtype=torch.bfloat16, enabled=config.bf16):
            loss = objective(x).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        scheduler.step()

        now = time.perf_counter()
        elapsed, clock = elapsed + now - clock, now
        over_budget = config.time_budget is not None and elapsed >= config.time_budget
        global_loss, stop = _agree(loss.detach(), over_budget, process)
        if not math.isfinite(global_loss):
            raise FloatingPointError(
                f"the loss became {global_loss} at step {step}; try a smaller --lr, --max-grad-norm or more --warmup-steps"
            )
        losses.append(global_loss)
        running = global_loss if running is None else 0.98 * running + 0.02 * global_loss
        bar.set_postfix({"bpd": f"{running:.3f}"}, refresh=False)
        if step - start == min(10, (config.steps - start) // 2):  # throughput after compilation and start-up
            timed_from = now
        elif timed_from is not None:
            timed_images += config.batch_size
        last_step = step + 1 == config.steps or stop
        if process.is_main and (last_step or (step + 1) % config.checkpoint_every == 0):
            _save_checkpoint(checkpoint_path, config, model, optimizer, scheduler, step + 1, losses, elapsed)
        if stop:
            break
    bar.close()

    results = {}
    if process.is_main:
        results = _finish(config, process, model, test_set, losses, elapsed, source)
        results["images_per_second"] = timed_images / (clock - timed_from) if timed_images else None
        (out / "results.json").write_text(json.dumps(results, indent=1))
    if process.world_size > 1:
        shared = [results]
        dist.broadcast_object_list(shared, src=0)
        results = shared[0]
    return results


class BitsPerDim(nn.Module):
    """The training objective as a module (for DistributedDataParallel and ``torch.compile``): ``[B, C, H, W]`` -> ``[B]``.

    ``bpd(x) = (-log p(x) + D log 256) / (D log 2)`` for dequantized pixels ``x = (k + u) / 256``.
    """

    def __init__(self, model: Glow, dimension: int) -> None:
        super().__init__()
        self.model, self.dimension = model, dimension

    def forward(self, x: Tensor) -> Tensor:
        return discrete_bits_per_dim(self.model.log_prob(x), self.dimension, NUM_BINS)


def batch(images: Tensor, step: int, config: GlowConfig, process: Process) -> Tensor:
    """This process's share of the dequantized global batch of ``step``: ``[batch_size / N, C, H, W]`` in ``[0, 1)``.

    The global batch (``batch_size`` images drawn with replacement, and their noise) comes from a
    generator seeded by ``(config.seed, step)``: the same on every process and in a resumed run.
    """
    generator = torch.Generator().manual_seed(config.seed * 2**32 + step)
    index = torch.randint(images.shape[0], (config.batch_size,), generator=generator)
    noise = torch.rand((config.batch_size, *images.shape[1:]), generator=generator)
    share = config.batch_size // process.world_size
    mine = slice(process.rank * share, (process.rank + 1) * share)
    pixels = (images[index[mine]].float() + noise[mine]) / NUM_BINS
    return pixels.to(process.device, non_blocking=True)


@torch.no_grad()
def evaluate_bits_per_dim(model: Glow, images: Tensor, batch_size: int = 500, seed: int = 0) -> float:
    """Mean bits per dimension of uint8 ``images`` ``[N, C, H, W]`` under ``model``, in float32, with fixed noise."""
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    dimension = math.prod(images.shape[1:])
    total = 0.0
    for start in range(0, images.shape[0], batch_size):
        pixels = images[start : start + batch_size].float()
        x = ((pixels + torch.rand(pixels.shape, generator=generator)) / NUM_BINS).to(device)
        total += discrete_bits_per_dim(model.log_prob(x), dimension, NUM_BINS).sum().item()
    return total / images.shape[0]


def save_sample_grid(model: Glow, path: Path, temperatures: Sequence[float], num_samples: int, seed: int = 0) -> None:
    """A PNG with one grid of ``num_samples`` samples per temperature, side by side.

    Drawn on a ``matplotlib.figure.Figure`` of its own, not through ``pyplot``: no backend is
    chosen or changed, so it works the same in a terminal without a display and in a notebook.
    """
    from matplotlib.figure import Figure

    from course_pkg.plotting import plot_image_grid

    torch.manual_seed(seed)
    figure = Figure(figsize=(3.2 * len(temperatures), 3.6))
    axes = figure.subplots(1, len(temperatures), squeeze=False)
    columns = math.ceil(math.sqrt(num_samples))
    for ax, temperature in zip(axes[0], temperatures):
        pixels = sample_pixels(model, num_samples, temperature)
        plot_image_grid(pixels.float().cpu() / (NUM_BINS - 1), columns, ax=ax, title=f"temperature {temperature:g}")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


@torch.no_grad()
def sample_pixels(model: Glow, num_samples: int, temperature: float = 1.0) -> Tensor:
    """Samples as 8-bit images ``[num_samples, C, H, W]`` (uint8): ``floor(256 x)`` of ``x = f^{-1}(T eps)``."""
    model.eval()
    x = model.sample(num_samples, temperature)
    return torch.floor(x * NUM_BINS).clamp(0, NUM_BINS - 1).to(torch.uint8)


def _finish(
    config: GlowConfig, process: Process, model: Glow, test_set: Tensor, losses: list[float], elapsed: float, source: str
) -> dict:
    out = Path(config.out)
    test_images = test_set[: config.eval_images] if config.eval_images else test_set
    test_bpd = evaluate_bits_per_dim(model, test_images, config.eval_batch_size, config.seed)
    save_sample_grid(model, out / "samples.png", config.temperatures, config.num_samples, config.seed)
    cuda = process.device.type == "cuda"
    return {
        "test_bits_per_dim": test_bpd,
        "test_images": int(test_images.shape[0]),
        "train_bits_per_dim_last_100": sum(losses[-100:]) / len(losses[-100:]),
        "steps": len(losses),
        "training_seconds": elapsed,
        "peak_memory_bytes": torch.cuda.max_memory_allocated(process.device) if cuda else None,
        "parameters": sum(p.numel() for p in model.parameters()),
        "data": source,
        "device": torch.cuda.get_device_name(process.device) if cuda else "cpu",
        "world_size": process.world_size,
        "torch": torch.__version__,
        "config": asdict(config),
        "samples": "samples.png",
        "losses": losses,
    }


def _datasets(name: str) -> tuple[Tensor, Tensor, str]:
    """Training and held-out uint8 images ``[N, C, H, W]``, and where they came from."""
    train_set, test_set, source = train_validation(name, validation_size=HELD_OUT_WHERE_ONLY_TEST_SPLIT)
    return train_set.images, test_set.images, source


def _join_processes(config: GlowConfig) -> Process:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Process(0, 1, torch.device(config.device) if config.device else default_device())
    local_rank = int(os.environ["LOCAL_RANK"])
    if config.device:
        device = torch.device(config.device)
    elif torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Process(dist.get_rank(), dist.get_world_size(), device)


def _agree(loss: Tensor, over_budget: bool, process: Process) -> tuple[float, bool]:
    """The global batch's mean loss and whether any process is over the time budget (one collective per step)."""
    values = torch.stack([loss.float(), loss.new_tensor(float(over_budget), dtype=torch.float32)])
    if process.world_size > 1:
        dist.all_reduce(values)
        values[0] /= process.world_size
    mean_loss, over = values.tolist()
    return mean_loss, over > 0


def _save_checkpoint(path: Path, config: GlowConfig, model: Glow, optimizer, scheduler, step: int,
                     losses: list[float], elapsed: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": step,
        "losses": losses,
        "elapsed": elapsed,
        "config": asdict(config),
    }
    partial = path.with_suffix(".part")
    torch.save(state, partial)
    partial.replace(path)  # a run killed while saving leaves the previous checkpoint whole


def _load_checkpoint(path: Path, config: GlowConfig, model: Glow, optimizer, scheduler,
                     process: Process) -> tuple[int, list[float], float]:
    state = torch.load(path, map_location=process.device, weights_only=True)
    saved = state["config"]
    different = [name for name in ARCHITECTURE if saved[name] != getattr(config, name)]
    if different:
        details = ", ".join(f"{name}: {saved[name]!r} there, {getattr(config, name)!r} here" for name in different)
        raise ValueError(f"{path} was made with other settings ({details}); pass another --out or --no-resume")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return state["step"], list(state["losses"]), state["elapsed"]


def command_line() -> argparse.ArgumentParser:
    """The parser of ``python -m course_pkg.glow``: one subcommand, ``train``, with an option per :class:`GlowConfig` field."""
    parser = argparse.ArgumentParser(prog="python -m course_pkg.glow", description="Train Glow (chapter 6).")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train, resume, evaluate, sample; writes --out/results.json")
    defaults = GlowConfig()
    for option in fields(GlowConfig):
        name, default = "--" + option.name.replace("_", "-"), getattr(defaults, option.name)
        help_text = OPTION_HELP[option.name] + ("" if default is None else " (default: %(default)s)")
        if isinstance(default, bool):
            train.add_argument(name, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif option.name == "temperatures":
            train.add_argument(name, type=float, nargs="+", default=list(default), help=help_text)
        else:
            kind = {"time_budget": float, "eval_images": int, "device": str}.get(option.name, type(default))
            train.add_argument(name, type=kind, default=default, help=help_text)
    return parser


def main(argv: Sequence[str] | None = None) -> dict:
    """``python -m course_pkg.glow train [options]``; ``--help`` lists them."""
    parser = command_line()
    arguments = vars(parser.parse_args(argv))
    arguments.pop("command")
    arguments["temperatures"] = tuple(arguments["temperatures"])
    results = train_glow(GlowConfig(**arguments))
    if results and int(os.environ.get("RANK", "0")) == 0:
        print(f"test bits/dim {results['test_bits_per_dim']:.4f} on {results['test_images']} held-out images "
              f"after {results['steps']} steps; figures in {Path(arguments['out']) / 'results.json'}")
    return results


if __name__ == "__main__":
    main()
