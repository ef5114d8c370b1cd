"""course_pkg against zuko, nflows and normflows: RealNVP speed and held-out NLL on identical workloads.

One run, side by side on this machine, the same workload for every library:

  * RealNVP of 8 affine couplings (alternating halves; on 2-D each coupling transforms one feature
    conditioned on the other) with (64, 64) SiLU MLP conditioners, on two moons:
    - time per training step (forward, backward, Adam) at batch 512, with 1 thread and with all;
    - held-out NLL on 10,000 fresh points after 2,000 steps, single-threaded;
  * ``log_prob`` of the same kind of model in 16 dimensions at batch 4096, without gradients.

Times are medians of ``torch.utils.benchmark.Timer(...).blocked_autorange()`` blocks, measured in
rounds that interleave the libraries (so a slow spell of the machine hits them all). Each figure
is followed by the ratio course_pkg / fastest other library, and by that ratio's range over the
rounds (each round's ratio compares times taken minutes apart at most, which a slow spell of a
shared machine moves less than it moves the times themselves). Targets (from the issue):
ratio <= 1.0, held-out NLL within 0.02 nats of the best.

Identical means: the same data, batches, seed, optimiser (Adam, same lr, no clipping) and
training loop; the same conditioner network (Linear-SiLU-Linear-SiLU-Linear, widths 64, last layer
zero-initialised) with the *same initial hidden weights* in every library (drawn once from the seed
and copied in), so each model starts as the same function. What stays different is each library's
own coupling: its scale parameterisation, how it splits the features and its base distribution;
the run prints these notes.

The other libraries are for benchmarking only (the course never imports them). Install them with

    pip install --no-deps -r benchmarks/requirements.txt

(--no-deps keeps the pinned CPU torch; see that file). A library that is missing or fails is
reported as such and left out of the ratios.

Usage:  python benchmarks/compare_libraries.py [--steps 2000] [--rounds 5] [--min-run-time 0.3]
                                               [--libraries course_pkg zuko nflows normflows]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from course_pkg.data import toy_data
from course_pkg.models import RealNVP

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helpers next to this script, however it is loaded
import _measure  # noqa: E402
from _measure import (  # noqa: E402
    IgnoreContext, Timing, fastest_other, load_line, log_prob_call, measure, negative_log_likelihood, print_timings,
    torch_threads, training_step,
)

LIBRARIES = ("course_pkg", "zuko", "nflows", "normflows")
NUM_COUPLINGS = 8
TRAIN_SEED, HELD_OUT_SEED, TIMING_SEED = 1000, 2000, 3000  # offsets: the data sets never share a seed
HIDDEN = 64
TWO_D, HIGH_D = 2, 16

NOTES = {
    "course_pkg": "SplitAffineCoupling: log-scale 3 tanh(a / 3); halves split as views (first, second, first, ...), "
    "the kept half's conditioner gives 2 numbers per transformed feature, merged by cat",
    "zuko": "RealNVP(transforms=8, hidden_features=(64, 64), activation=SiLU); log-scale "
    "a / (1 + |a / ln 1e-3|); index split and merge",
    "nflows": "AffineCouplingTransform: scale = sigmoid(a + 2) + 1e-3 < 1.001, so in the data-to-noise "
    "direction each coupling can only contract (log-det < 8 ln 1.001: on 2-D the NLL cannot go below "
    "ln 2 pi - 0.01 = 1.83 nats), and a new model is not the identity (scale 0.88); index split and merge",
    "normflows": "AffineCouplingBlock(scale_map='exp') in its generative direction: log_prob runs the "
    "inverse, x * exp(-a) - t exp(-a) (unbounded log-scale); chunk split (halves, not even/odd, in 16-D), "
    "DiagGaussian base",
}
COMMON_NOTE = (
    "every library: the same Linear-SiLU-Linear-SiLU-Linear conditioners (64, 64), last layer zero, the same "
    "initial hidden weights (so the same parameter counts); the same data, batches, seed, Adam (torch defaults "
    "but lr) and loop, no gradient clipping"
)


# ----------------------------------------------------------------------------------- the models


@dataclass
class Model:
    """One library's RealNVP: the module (for parameters), its ``log_prob``, and its conditioners.

    ``conditioners[k] = (first, hidden, last)``: the three ``Linear`` layers of the conditioner of
    the ``k``-th coupling *on the data side*; the first reads the features that coupling keeps.
    """

    module: nn.Module
    log_prob: Callable[[Tensor], Tensor]
    conditioners: list[tuple[nn.Module, nn.Module, nn.Module]]

    @property
    def num_parameters(self) -> int:
        return sum(parameter.numel() for parameter in self.module.parameters())


def conditioner(in_features: int, out_features: int) -> nn.Sequential:
    """The conditioner every library gets: Linear-SiLU-Linear-SiLU-Linear (course_pkg's MLP, built by hand)."""
    return nn.Sequential(
        nn.Linear(in_features, HIDDEN), nn.SiLU(), nn.Linear(HIDDEN, HIDDEN), nn.SiLU(), nn.Linear(HIDDEN, out_features)
    )


def _linears(network: nn.Module) -> tuple[nn.Module, nn.Module, nn.Module]:
    layers = [layer for layer in network.modules() if hasattr(layer, "weight") and layer.weight.dim() == 2]
    assert len(layers) == 3, f"expected 3 linear layers, found {len(layers)} in {network}"
    return layers[0], layers[1], layers[2]


def _kept_even_odd(features: int, layer: int) -> Tensor:
    """The features a coupling keeps: even ones at even layers, odd ones at odd layers (zuko's masks)."""
    return torch.arange(features)[torch.arange(features) % 2 == layer % 2]


def build_course_pkg(features: int) -> Model:
    model = RealNVP(features, num_layers=NUM_COUPLINGS, hidden_features=HIDDEN, num_hidden_layers=2)
    return Model(model, model.log_prob, [_linears(coupling.conditioner) for coupling in model.transform.flows])


def build_zuko(features: int) -> Model:
    import zuko

    flow = zuko.flows.RealNVP(features, transforms=NUM_COUPLINGS, hidden_features=(HIDDEN, HIDDEN), activation=nn.SiLU)
    conditioners = [_linears(layer.hyper) for layer in flow.transform.transforms]
    return Model(flow, lambda x: flow().log_prob(x), conditioners)


def build_nflows(features: int) -> Model:
    from nflows.distributions.normal import StandardNormal
    from nflows.flows.base import Flow
    from nflows.transforms.base import CompositeTransform
    from nflows.transforms.coupling import AffineCouplingTransform

    layers = []
    for k in range(NUM_COUPLINGS):
        kept = _kept_even_odd(features, k)
        transformed = torch.ones(features, dtype=torch.int64)
        transformed[kept] = 0  # nflows' mask marks the features it transforms
        layer = AffineCouplingTransform(transformed, lambda d_in, d_out: IgnoreContext(conditioner(d_in, d_out)))
        layers.append(layer)
    flow = Flow(CompositeTransform(layers), StandardNormal([features]))
    return Model(flow, flow.log_prob, [_linears(layer.transform_net) for layer in layers])


def build_normflows(features: int) -> Model:
    import normflows

    half = features // 2
    data_side = []  # normflows is written in the generative direction: log_prob runs flows[-1] first
    for k in range(NUM_COUPLINGS):
        split = "channel" if k % 2 == 0 else "channel_inv"  # keeps the first half, or the second
        block = normflows.flows.AffineCouplingBlock(conditioner(half, 2 * (features - half)), scale_map="exp",
                                                    split_mode=split)
        data_side.append(block)
    base = normflows.distributions.DiagGaussian(features, trainable=False)
    model = normflows.NormalizingFlow(base, list(reversed(data_side)))
    return Model(model, model.log_prob, [_linears(block.flows[1].param_map) for block in data_side])


BUILDERS: dict[str, Callable[[int], Model]] = {
    "course_pkg": build_course_pkg,
    "zuko": build_zuko,
    "nflows": build_nflows,
    "normflows": build_normflows,
}


def initial_weights(features: int, seed: int) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
    """Per coupling, the two hidden layers ``(W1 [64, kept], b1, W2 [64, 64], b2)``, PyTorch's default init."""
    generator = torch.Generator().manual_seed(seed)
    kept = features // 2

    def uniform(fan_in: int, *shape: int) -> Tensor:
        return (2 * torch.rand(shape, generator=generator) - 1) / math.sqrt(fan_in)

    return [
        (uniform(kept, HIDDEN, kept), uniform(kept, HIDDEN), uniform(HIDDEN, HIDDEN, HIDDEN), uniform(HIDDEN, HIDDEN))
        for _ in range(NUM_COUPLINGS)
    ]


def build(library: str, features: int, seed: int) -> Model:
    """``library``'s model with the shared initial weights: same hidden layers, zero last layer."""
    torch.manual_seed(seed)
    model = BUILDERS[library](features)
    with torch.no_grad():
        for (first, hidden, last), (w1, b1, w2, b2) in zip(
            model.conditioners, initial_weights(features, seed), strict=True
        ):
            first.weight.copy_(w1)
            first.bias.copy_(b1)
            hidden.weight.copy_(w2)
            hidden.bias.copy_(b2)
            last.weight.zero_()
            last.bias.zero_()
    return model


# ----------------------------------------------------------------------------------- measuring


def held_out_nll(model: Model, x: Tensor) -> float:
    with torch.no_grad():
        return -model.log_prob(x).mean().item()


def train_and_evaluate(
    library: str, seed: int, steps: int, batch: int, lr: float, held_out: Tensor
) -> tuple[float, float, float]:
    """Train ``steps`` steps single-threaded on fresh two-moons batches; returns (NLL before, NLL after, seconds)."""
    model = build(library, TWO_D, seed)
    data = toy_data("two_moons", steps * batch, seed=TRAIN_SEED + seed).split(batch)
    optimizer = torch.optim.Adam(model.module.parameters(), lr=lr)
    before = held_out_nll(model, held_out)
    step = training_step(negative_log_likelihood(model.log_prob), optimizer, data)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - start
    return before, held_out_nll(model, held_out), seconds


# ----------------------------------------------------------------------------------- reporting


def available(libraries: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The libraries that import and build, and a reason for each that does not."""
    return _measure.available(libraries, lambda library: build(library, TWO_D, 0).log_prob(torch.zeros(4, TWO_D)))


def nll_section(libraries: Sequence[str], args: argparse.Namespace) -> dict[str, object]:
    """Train every library on each seed, single-threaded; print the held-out NLLs and course_pkg's gap to the best."""
    seeds = list(range(args.seed, args.seed + args.seeds))
    print(f"\nheld-out NLL (nats, lower is better) on {args.held_out:,} fresh two-moons points after {args.steps:,} "
          f"steps, batch {args.batch}, Adam lr {args.lr:g}, 1 thread")
    seed_columns = "".join(f"{f'seed {seed}':>9}" for seed in seeds)
    print(f"  {'':12}{'start':>8}{seed_columns}{'mean':>9}{'train time':>12}")
    nll: dict[str, list[float]] = {}
    with torch_threads(1):
        for name in libraries:
            before, seconds, nll[name] = [], 0.0, []
            for seed in seeds:
                held_out = toy_data("two_moons", args.held_out, seed=HELD_OUT_SEED + seed)
                start, after, elapsed = train_and_evaluate(name, seed, args.steps, args.batch, args.lr, held_out)
                before.append(start)
                nll[name].append(after)
                seconds += elapsed
            mean = statistics.fmean(nll[name])
            cells = "".join(f"{value:9.4f}" for value in nll[name])
            mean_cell = f"{mean:9.4f}" if math.isfinite(mean) else f"{'diverged':>9}"
            print(f"  {name:12}{statistics.fmean(before):8.3f}{cells}{mean_cell}{seconds / len(seeds):10.1f} s",
                  flush=True)
    means = {name: statistics.fmean(values) for name, values in nll.items()}
    results: dict[str, object] = {"nll": nll}
    best = fastest_other(means)  # the lowest finite mean NLL among the others
    if best:
        gap = means["course_pkg"] - means[best]
        per_seed = ", ".join(f"{ours - theirs:+.3f}" for ours, theirs in zip(nll["course_pkg"], nll[best]))
        print(f"  course_pkg - best other ({best}): {gap:+.4f} nats on the mean (per seed: {per_seed}); "
              f"start: every model's NLL before training (train time: per seed)")
        results["nll_gap"] = gap
    return results


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--libraries", nargs="+", default=list(LIBRARIES), choices=LIBRARIES)
    parser.add_argument("--steps", type=int, default=2000, help="training steps for the held-out NLL")
    parser.add_argument("--batch", type=int, default=512, help="training batch")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0, help="the first seed")
    parser.add_argument("--seeds", type=int, default=3, help="seeds for the held-out NLL (each the same for all)")
    parser.add_argument("--held-out", type=int, default=10_000, help="fresh two-moons points for the NLL")
    parser.add_argument("--log-prob-batch", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds, libraries interleaved")
    parser.add_argument("--min-run-time", type=float, default=0.3, help="seconds per blocked_autorange")
    parser.add_argument("--skip-nll", action="store_true", help="timings only")
    args = parser.parse_args(argv)
    if min(args.steps, args.seeds, args.batch, args.held_out, args.log_prob_batch, args.rounds) < 1:
        parser.error("--steps, --seeds, --batch, --held-out, --log-prob-batch and --rounds must be positive")

    all_threads = torch.get_num_threads()
    thread_counts = sorted({1, all_threads})
    print(_measure.machine_line())
    print(load_line("at start"))
    libraries, missing = available(args.libraries)
    _measure.print_libraries(libraries, missing)
    print(f"workload: RealNVP, {NUM_COUPLINGS} affine couplings, seed {args.seed}")
    print("notes:")
    print(f"  {COMMON_NOTE}")
    for name in libraries:
        print(f"  {name:11} {NOTES[name]}")

    print("\nparameters   " + "".join(f"{name:>12}" for name in libraries))
    for features in (TWO_D, HIGH_D):
        counts = "".join(f"{build(name, features, args.seed).num_parameters:>12,}" for name in libraries)
        print(f"  {features:2}-D model{counts}")

    results: dict[str, object] = {"libraries": libraries, "missing": missing}

    # time per training step, two moons, batch 512
    batches = toy_data("two_moons", 32 * args.batch, seed=TIMING_SEED + args.seed).split(args.batch)
    step_timings: dict[int, dict[str, Timing]] = {}
    for n in thread_counts:
        calls = {}
        for name in libraries:
            model = build(name, TWO_D, args.seed)
            calls[name] = training_step(negative_log_likelihood(model.log_prob), torch.optim.Adam(model.module.parameters(), lr=args.lr), batches)
        step_timings[n] = measure(calls, n, args.rounds, args.min_run_time)
    results["step"] = print_timings(
        f"time per training step (forward, backward, Adam), 2-D two moons, batch {args.batch}", step_timings
    )

    # log_prob without gradients, 16-D, batch 4096
    x = torch.randn(args.log_prob_batch, HIGH_D, generator=torch.Generator().manual_seed(args.seed))
    log_prob_timings: dict[int, dict[str, Timing]] = {}
    for n in thread_counts:
        calls = {name: log_prob_call(build(name, HIGH_D, args.seed), x) for name in libraries}
        log_prob_timings[n] = measure(calls, n, args.rounds, args.min_run_time)
    results["log_prob"] = print_timings(
        f"log_prob without gradients, {HIGH_D}-D, batch {args.log_prob_batch}", log_prob_timings
    )

    if not args.skip_nll:
        results.update(nll_section(libraries, args))

    print(load_line("at end"))
    print("\ntargets: ratio <= 1.0, held-out NLL within 0.02 nats of the best")
    for label, key in (("training step", "step"), ("log_prob 16-D", "log_prob")):
        for n, ratio in results[key].items():
            if ratio is not None:
                print(f"  {label}, {n} thread{'s' if n > 1 else ''}: {'met' if ratio.value <= 1.0 else 'NOT met'} "
                      f"({ratio.describe()})")
    if "nll_gap" in results:
        gap = results["nll_gap"]
        print(f"  held-out NLL, course_pkg - best other: {gap:+.4f} nats {'met' if gap <= 0.02 else 'NOT met'}")
    return results


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"\n(total {time.perf_counter() - start:.0f} s)")
    sys.exit(0)
