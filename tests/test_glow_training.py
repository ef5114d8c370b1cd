"""The capstone's training command (`python -m course_pkg.glow train`): distributed runs, resuming, warm-up.

Needs the MNIST test split (``$COURSE_PKG_DATA/mnist``), as the chapters do. The runs are tiny
(one level of steps on 28x28, a few steps of training) and take seconds.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from course_pkg.flows import ActNorm
from course_pkg.glow import GlowConfig, Process, batch, main, train_glow
from course_pkg.data import load_mnist

TINY = GlowConfig(
    num_levels=2, steps_per_level=1, hidden_channels=8, batch_size=8, steps=6, warmup_steps=3,
    eval_images=50, num_samples=4, progress=False,
)
TINY_OPTIONS = [
    "--num-levels", "2", "--steps-per-level", "1", "--hidden-channels", "8", "--batch-size", "8",
    "--steps", "5", "--warmup-steps", "3", "--eval-images", "50", "--num-samples", "4", "--no-progress",
]


def _run(command: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_two_gloo_processes_follow_the_one_process_trajectory(tmp_path: Path) -> None:
    """torchrun with 2 CPU processes and the same global batch and seed: the loss of every step is the same.

    The parameters are not compared: Adam's first updates are +-lr whatever a gradient's size, so a
    gradient at the level of rounding (zero-initialised convolutions start there) can take either
    sign in either run. A model that differed (ActNorm set on each process's half, gradients not
    averaged) would show in the losses from step 1 on.
    """
    one, two = tmp_path / "one", tmp_path / "two"
    _run([sys.executable, "-m", "course_pkg.glow", "train", *TINY_OPTIONS, "--out", str(one)], tmp_path)
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
          "-m", "course_pkg.glow", "train", *TINY_OPTIONS, "--out", str(two)], tmp_path)
    single, double = (json.loads((out / "results.json").read_text()) for out in (one, two))
    assert double["world_size"] == 2 and single["world_size"] == 1
    # the same sums in another order (two halves, then an all-reduce): only rounding differs
    torch.testing.assert_close(torch.tensor(double["losses"]), torch.tensor(single["losses"]), rtol=1e-5, atol=0)
    assert len(single["losses"]) == 5 and single["losses"][0] != single["losses"][-1]


def _initialise_half(rank: int, init_file: str, x: torch.Tensor, results: dict) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    layer = ActNorm(3).double()
    layer.initialize(x.chunk(2)[rank])
    results[rank] = (layer.log_scale.detach().clone(), layer.shift.detach().clone())
    dist.destroy_process_group()


def test_actnorm_initialises_on_the_global_batch_under_distributed(tmp_path: Path) -> None:
    """Each of 2 processes sees half of a batch; both set the statistics of the whole batch."""
    x = torch.randn(16, 3, 4, 4, dtype=torch.float64) * torch.tensor([1.0, 3.0, 0.5]).reshape(1, 3, 1, 1).double()
    x[:8] += 2.0  # the halves differ: statistics of either half alone would be wrong
    results = mp.Manager().dict()
    mp.spawn(_initialise_half, args=(str(tmp_path / "rendezvous"), x, results), nprocs=2)
    whole = ActNorm(3).double()
    whole.initialize(x)
    for rank in (0, 1):
        log_scale, shift = results[rank]
        torch.testing.assert_close(log_scale, whole.log_scale.detach())
        torch.testing.assert_close(shift, whole.shift.detach())


def test_a_resumed_run_is_the_uninterrupted_run_and_does_not_initialise_again(tmp_path, monkeypatch) -> None:
    straight = train_glow(replace(TINY, out=str(tmp_path / "straight")))
    train_glow(replace(TINY, out=str(tmp_path / "resumed"), steps=3))

    def initialise_again(self, x):
        raise AssertionError("ActNorm was initialised again after resuming")

    monkeypatch.setattr(ActNorm, "initialize", initialise_again)
    resumed = train_glow(replace(TINY, out=str(tmp_path / "resumed")))
    assert resumed["steps"] == straight["steps"] == 6
    assert resumed["losses"] == straight["losses"]
    states = [torch.load(tmp_path / name / "checkpoint.pt", weights_only=True) for name in ("straight", "resumed")]
    for name, value in states[0]["model"].items():
        assert torch.equal(states[1]["model"][name], value), name
    assert resumed["test_bits_per_dim"] == straight["test_bits_per_dim"]


def test_resuming_with_other_settings_is_refused(tmp_path: Path) -> None:
    train_glow(replace(TINY, out=str(tmp_path), steps=1))
    with pytest.raises(ValueError, match=r"other settings \(hidden_channels: 8 there, 16 here\)"):
        train_glow(replace(TINY, out=str(tmp_path), hidden_channels=16))


def test_warm_up_keeps_the_first_steps_from_blowing_up(tmp_path: Path) -> None:
    """At lr 3e-2, the first steps without warm-up throw the loss to ~10^5 bits/dim; a 50-step warm-up keeps it down.

    (Clipping and the couplings' bounded scales keep it finite either way; without them it overflows.)
    The loss of a new model is about 6.5 bits/dim; the warmed-up run never rises far above it.
    """
    config = replace(TINY, steps_per_level=4, hidden_channels=32, batch_size=32, steps=40, lr=3e-2)
    cold = train_glow(replace(config, out=str(tmp_path / "cold"), warmup_steps=1))
    warm = train_glow(replace(config, out=str(tmp_path / "warm"), warmup_steps=50))
    assert max(cold["losses"]) > 1e3
    assert max(warm["losses"]) < warm["losses"][0] + 1 and all(map(math.isfinite, warm["losses"]))


def test_first_learning_rate_is_lr_over_warmup(tmp_path: Path) -> None:
    train_glow(replace(TINY, out=str(tmp_path), steps=1, warmup_steps=10, lr=1e-2))
    group = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["optimizer"]["param_groups"][0]
    assert group["lr"] == pytest.approx(2e-3)  # after one step: (1 + 1) / 10 of lr


def test_batches_are_the_global_batch_split_among_processes() -> None:
    images = load_mnist("test").images[:100]
    config = replace(TINY, batch_size=6)
    whole = batch(images, 3, config, Process(0, 1, torch.device("cpu")))
    halves = [batch(images, 3, config, Process(rank, 2, torch.device("cpu"))) for rank in (0, 1)]
    assert torch.equal(torch.cat(halves), whole)
    assert not torch.equal(batch(images, 4, config, Process(0, 1, torch.device("cpu"))), whole)
    assert whole.min() >= 0 and whole.max() < 1


def test_the_command_writes_its_outputs(tmp_path: Path, capsys) -> None:
    results = main(["train", *TINY_OPTIONS, "--out", str(tmp_path), "--temperatures", "1.0", "0.5"])
    assert {"samples.png", "results.json", "checkpoint.pt"} <= {path.name for path in tmp_path.iterdir()}
    written = json.loads((tmp_path / "results.json").read_text())
    assert written == json.loads(json.dumps(results))
    assert written["config"]["temperatures"] == [1.0, 0.5] and results["steps"] == 5
    assert "9000 for training and 1000" in results["data"] or "official training split" in results["data"]
    assert "test bits/dim" in capsys.readouterr().out


def test_cifar10_trains_on_three_channel_images(tmp_path: Path, monkeypatch) -> None:
    """The command on CIFAR-10's format (a test batch only, as the pickle of the official archive): 3 levels."""
    import pickle

    import numpy as np

    folder = tmp_path / "data" / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batch_file = {b"data": rng.integers(0, 256, (1100, 3072), dtype=np.uint8), b"labels": [0] * 1100,
                  b"batch_label": b"testing batch 1 of 1"}
    (folder / "test_batch").write_bytes(pickle.dumps(batch_file))
    monkeypatch.setenv("COURSE_PKG_DATA", str(tmp_path / "data"))
    results = train_glow(replace(TINY, dataset="cifar10", num_levels=3, steps=2, out=str(tmp_path / "run")))
    assert "100 for training and 1000" in results["data"] and results["test_images"] == 50
    assert 7 < results["test_bits_per_dim"] < 9  # uniform noise images: about 8 bits/dim
