"""The capstone's GPU benchmark: Glow on MNIST, training speed, memory, sampling speed, bits/dim in a fixed budget.

Everything runs through the training command's own code (:func:`course_pkg.glow.train_glow`), with
the full run's architecture (``GlowConfig``'s defaults) at a global batch of 256:

  1. **training images per second and peak memory** in four modes: float32, bf16 autocast, and
     each with ``torch.compile``. Each mode trains ``--throughput-steps`` steps; the rate is
     measured after the first 10 (compilation and start-up excluded), the peak memory is
     ``torch.cuda.max_memory_allocated`` over the run (on a CPU: not measured);
  2. **sampling images per second**: ``sample_pixels`` on batches of 256 at temperature 0.7;
  3. **test bits/dim reached in a fixed budget** (``--budget`` seconds of training, 8 minutes by
     default) in float32 and in bf16, with the mode's compile setting ``--budget-compile``.

Targets on one H100-class GPU: at least 5,000 training images/s with bf16; bf16 raises the
bits/dim reached by at most 0.01; test bits/dim at most 1.15 in the budget. The script prints
each figure beside its target and writes them all to ``--out/glow_gpu.json``.

Without a GPU it runs at a tiny size (``--tiny``: a small model, a few steps, a 5-second budget),
so that it is tested; those figures say nothing about a GPU.

``--parts`` and ``--budget-modes`` run a subset (a machine lent for a few minutes at a time can
run the throughput part and each budget run separately); the targets are printed for the parts
that ran.

Usage:  python benchmarks/glow_gpu.py [--budget 480] [--out runs/glow_gpu] [--tiny]
                                      [--parts throughput sampling budget] [--budget-modes float32 bf16]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import load_line, machine_line  # noqa: E402

from course_pkg.devices import default_device  # noqa: E402
from course_pkg.glow import GlowConfig, Process, batch, sample_pixels, train_glow  # noqa: E402
from course_pkg.models import Glow  # noqa: E402

MODES = {"float32": (False, False), "bf16": (True, False), "float32 + compile": (False, True),
         "bf16 + compile": (True, True)}
PARTS = ("throughput", "sampling", "budget")
BUDGET_MODES = {"float32": False, "bf16": True}
TARGET_IMAGES_PER_SECOND = 5000
TARGET_BITS_PER_DIM = 1.15
TARGET_BF16_COST = 0.01


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=480.0, help="seconds of training for the bits/dim runs")
    parser.add_argument("--budget-compile", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--throughput-steps", type=int, default=60)
    parser.add_argument("--sampling-rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--out", default="runs/glow_gpu")
    parser.add_argument("--tiny", action="store_true", help="a tiny size, for a CPU (the tests use it)")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--budget-modes", nargs="+", choices=BUDGET_MODES, default=list(BUDGET_MODES))
    arguments = parser.parse_args(argv)

    device = default_device()
    print(machine_line())
    print(f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu (no GPU: not a GPU figure)'}")
    print(load_line("at the start"))
    base = GlowConfig(batch_size=arguments.batch_size, progress=False, resume=False, eval_images=1000, num_samples=16)
    if arguments.tiny:
        base = replace(base, steps_per_level=1, hidden_channels=8, batch_size=16, eval_images=64, num_samples=4)
        arguments.throughput_steps, arguments.budget, arguments.sampling_rounds = 12, 5.0, 2
    out = Path(arguments.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"machine": machine_line(), "device": str(device), "config": {
        "num_levels": base.num_levels, "steps_per_level": base.steps_per_level,
        "hidden_channels": base.hidden_channels, "batch_size": base.batch_size}}

    if "throughput" in arguments.parts:
        print(f"\ntraining throughput ({arguments.throughput_steps} steps per mode, batch {base.batch_size}, "
              f"Glow {base.num_levels} levels x {base.steps_per_level} steps, {base.hidden_channels} hidden channels)")
        results["throughput"] = {}
        with tempfile.TemporaryDirectory() as scratch:
            for mode, (bf16, compile_) in MODES.items():
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                figures = train_glow(replace(base, out=f"{scratch}/{len(results['throughput'])}", bf16=bf16,
                                             compile=compile_, steps=arguments.throughput_steps, warmup_steps=10))
                rate, peak = figures["images_per_second"], figures["peak_memory_bytes"]
                results["throughput"][mode] = {"images_per_second": rate, "peak_memory_bytes": peak}
                memory = f"{peak / 2**30:.2f} GiB" if peak is not None else "not measured (CPU)"
                print(f"  {mode:<18} {rate:9.0f} images/s   peak memory {memory}")

    if "sampling" in arguments.parts:
        results["sampling_images_per_second"] = sampling_rate(base, device, arguments.sampling_rounds)
        print(f"\nsampling: {results['sampling_images_per_second']:.0f} images/s (batches of 256, temperature 0.7)")

    if "budget" in arguments.parts:
        print(f"\nbits/dim reached in {arguments.budget:.0f} s of training (compile: {arguments.budget_compile})")
        results["budget_seconds"], results["budget"] = arguments.budget, {}
        for mode in arguments.budget_modes:
            figures = train_glow(replace(base, out=str(out / mode), bf16=BUDGET_MODES[mode],
                                         compile=arguments.budget_compile, steps=10**9,
                                         time_budget=arguments.budget, eval_images=None))
            results["budget"][mode] = {key: figures[key] for key in
                                       ("test_bits_per_dim", "test_images", "steps", "training_seconds", "data")}
            print(f"  {mode:<8} test bits/dim {figures['test_bits_per_dim']:.4f} on {figures['test_images']} images "
                  f"after {figures['steps']} steps ({figures['data']})")

    results["targets"] = targets(results)
    print(f"\ntargets (one H100-class GPU){' -- this is not a GPU run' if device.type != 'cuda' else ''}:")
    for target, (value, met) in results["targets"].items():
        print(f"  {target}: {value} -- {'met' if met else 'NOT met'}")
    print(load_line("at the end"))
    (out / "glow_gpu.json").write_text(json.dumps(results, indent=1))
    return results


def targets(results: dict) -> dict[str, tuple[str, bool]]:
    """Each target that the parts which ran can decide: ``{target: (measured value, met)}``."""
    decided = {}
    throughput = results.get("throughput", {})
    if "bf16" in throughput:
        rate = max(throughput["bf16"]["images_per_second"], throughput["bf16 + compile"]["images_per_second"])
        decided[f"bf16 training images/s >= {TARGET_IMAGES_PER_SECOND}"] = (f"{rate:.0f}", rate >= TARGET_IMAGES_PER_SECOND)
    budget = results.get("budget", {})
    if {"float32", "bf16"} <= budget.keys():
        cost = budget["bf16"]["test_bits_per_dim"] - budget["float32"]["test_bits_per_dim"]
        decided[f"bf16 raises bits/dim by <= {TARGET_BF16_COST}"] = (f"{cost:+.4f}", cost <= TARGET_BF16_COST)
    if budget:
        best = min(entry["test_bits_per_dim"] for entry in budget.values())
        decided[f"test bits/dim <= {TARGET_BITS_PER_DIM} in the budget"] = (f"{best:.4f}", best <= TARGET_BITS_PER_DIM)
    return decided


def sampling_rate(config: GlowConfig, device: torch.device, rounds: int, batch_size: int = 256) -> float:
    """Images per second of :func:`~course_pkg.glow.sample_pixels` for a new model (speed does not depend on training)."""
    torch.manual_seed(0)
    model = Glow((1, 28, 28), config.num_levels, config.steps_per_level, config.hidden_channels).to(device)
    with torch.no_grad():  # ActNorm's initialisation, on one batch of real digits
        from course_pkg.data import load_mnist

        model.log_prob(batch(load_mnist("test").images, 0, config, Process(0, 1, device)))
    sample_pixels(model, batch_size, 0.7)  # warm-up
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(rounds):
        sample_pixels(model, batch_size, 0.7)
    _synchronize(device)
    return rounds * batch_size / (time.perf_counter() - start)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    main()
