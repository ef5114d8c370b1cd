"""course_pkg against zuko and torchcfm: continuous flows and flow matching on identical workloads.

One run, side by side on this machine, the same workload for every library:

  * ``log_prob`` of a CNF at batch 512 (``--batch``), in 2 and 16 dimensions, with the exact trace
    and with Hutchinson's estimator, with gradients (forward and backward of the mean NLL: one
    training step's cost without the optimiser) and without: course_pkg's ``CNF`` with
    ``method='dopri5'`` against zuko's free-form Jacobian transform (the transform of
    ``zuko.flows.CNF``, with its own adaptive Dormand-Prince solver), at the same ``atol`` and
    ``rtol``. Adaptive solvers choose their own steps, so the run prints the evaluations of the
    vector field each library makes (forward, and forward + backward), the time per evaluation, and
    how accurate each library's exact ``log_prob`` is: the largest error on 64 of the points
    against a float64 RK4 reference (whose own error, from halving its steps, is printed too).
    The libraries' error norms differ (torchdiffeq's RMS over the batch, zuko's maximum), so equal
    tolerances are not equal accuracy: the exact trace is timed once more with each library at the
    loosest tolerance (on a ladder of half decades) at which its error is at most the larger of
    the two errors at ``--tolerance``.
    Two fields (``--fields``): the *initial* one, drawn at random, on Gaussian points, and the
    *trained* one, the same field after a few hundred steps of maximum likelihood (FFJORD) on
    two moons (``D / 2`` independent pairs of two-moons coordinates in ``D`` dimensions), on
    held-out points of those data. The initial field is nearly linear, so a solver that tries
    the whole interval as its first step (zuko) is done in one step; the trained field is what a
    CNF integrates in use;
  * flow-matching training steps per second at batches 256 and 1024 on 2-D two moons:
    ``course_pkg.matching.flow_matching_loss`` with the independent and the minibatch-OT coupling
    against torchcfm's ``ConditionalFlowMatcher`` and ``ExactOptimalTransportConditionalFlowMatcher``
    (``sigma = 0``);
  * the same task end to end: each of the four trains for 3,000 steps at batch 256, then samples
    2,000 points with ``course_pkg.ode.odeint`` (dopri5, ``rtol = atol = 1e-4``); printed are the
    training time, the evaluations to sample, and the exact 2-Wasserstein distance of the samples
    to 2,000 held-out points, next to that of two independent data samples (the floor).

Times are medians of ``torch.utils.benchmark.Timer(...).blocked_autorange()`` blocks, measured in
rounds that interleave the libraries (a slow spell of the machine hits them all). Each figure is
followed by the ratio course_pkg / fastest other library and by that ratio's range over the
rounds. Target: ratio <= 1.0.

Identical means: the same vector field, course_pkg's ``TimeMLP`` (the time appended to the input
as one more feature; Linear-Tanh-Linear-Tanh-Linear, widths 64) with the *same weights* copied into
every library's copy (all layers drawn once from the seed, so the CNF's field is not zero); the same
inputs, batches, seeds, tolerances, loss (``mean_b |v - u|^2`` summed over features), optimiser
(Adam, same lr) and loop. Hutchinson's noise is Gaussian in both CNFs (zuko's only choice). What
stays different is each library's own machinery, printed as notes: zuko's solver and its error
norm, torchcfm's pairing and its time direction.

The other libraries are for benchmarking only (the course never imports them). Install them with

    pip install --no-deps -r benchmarks/requirements.txt

(--no-deps keeps the pinned CPU torch; see that file). A library that is missing or fails is
reported as such and left out of the ratios.

Usage:  python benchmarks/compare_continuous.py [--batch 512] [--dims 2 16] [--tolerance 1e-5]
            [--fields initial trained] [--cnf-training-steps 400] [--reference-steps 128]
            [--fm-batches 256 1024] [--steps 3000] [--train-batch 256] [--samples 2000]
            [--rounds 3] [--min-run-time 0.3] [--threads 1] [--libraries course_pkg zuko torchcfm]
"""

from __future__ import annotations

import argparse
import copy
import importlib
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from course_pkg.data import toy_data
from course_pkg.distributions import NormalizingFlow, StandardNormal
from course_pkg.flows import CNF
from course_pkg.matching import flow_matching_loss, wasserstein2
from course_pkg.nets import TimeMLP
from course_pkg.ode import odeint

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helpers next to this script, however it is loaded
import _measure  # noqa: E402
from _measure import (  # noqa: E402
    Ratio, Timing, cpu_model, fastest_other, load_line, log_prob_call, measure, negative_log_likelihood,
    torch_threads, training_step, version,
)

LIBRARIES = ("course_pkg", "zuko", "torchcfm")
HIDDEN = 64
TRACES = ("exact", "hutchinson")
FIELD_SEED, INPUT_SEED, TRAIN_SEED, HELD_OUT_SEED, FLOOR_SEED, NOISE_SEED = 0, 100, 1000, 2000, 3000, 4000
FIELDS = ("initial", "trained")
ERROR_POINTS = 64  # the points of the batch whose log_prob is checked against the reference
COUPLINGS = ("independent", "ot")

NOTES = {
    "course_pkg": "CNF(method='dopri5'): torchdiffeq's Dormand-Prince 5(4), RMS error norm over (z, log-det), "
    "FSAL (6 evaluations a step), initial step from the field; backpropagation through the solver's steps; "
    "exact trace as D vector-Jacobian products batched by torch.func.vmap (one backward pass), Hutchinson's "
    "one product by torch.autograd.grad",
    "zuko": "FreeFormJacobianTransform (zuko.flows.CNF's transform, here with the shared TimeMLP instead of "
    "zuko's MLP with sin/cos time features and ELU): own Dormand-Prince 5(4), max error norm, first step the "
    "whole interval, 7 evaluations a step, log-det scaled by 1e-2 inside the solver (its tolerance 100x "
    "looser); gradients by the adaptive checkpoint adjoint (the backward pass re-evaluates every step); "
    "exact trace as one batched vector-Jacobian product",
    "torchcfm": "noise x0 at t = 0, data x1 at t = 1, target x1 - x0 (course_pkg: data at t = 0, noise at t = 1, "
    "target noise - x); the same cost, and sampling integrates 0 -> 1 instead of 1 -> 0. sigma = 0 still draws "
    "a noise tensor per step; minibatch OT draws pairs from the exact plan (numpy, with replacement), "
    "course_pkg reorders the noise by the plan's permutation",
}


# ----------------------------------------------------------------------------------- the vector field


class Counted(nn.Module):
    """``field`` that counts its evaluations in ``calls`` (forward passes, recomputations included)."""

    def __init__(self, field: nn.Module) -> None:
        super().__init__()
        self.field = field
        self.calls = 0

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        self.calls += 1
        return self.field(t, z)


def shared_field(features: int, seed: int) -> TimeMLP:
    """``TimeMLP(features, 64)`` with every layer drawn from ``seed`` (PyTorch's default uniform init, last layer too)."""
    network = TimeMLP(features, hidden_features=HIDDEN)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in network.modules():
            if isinstance(layer, nn.Linear):
                bound = 1 / math.sqrt(layer.in_features)
                for parameter in (layer.weight, layer.bias):
                    parameter.copy_((2 * torch.rand(parameter.shape, generator=generator) - 1) * bound)
    return network


def moons(features: int, num_samples: int, seed: int) -> Tensor:
    """``[num_samples, features]``: independent pairs of two-moons coordinates side by side (the last cut if odd)."""
    pairs = [toy_data("two_moons", num_samples, seed=seed + pair) for pair in range(math.ceil(features / 2))]
    return torch.cat(pairs, dim=1)[:, :features]


def trained_field(features: int, args: argparse.Namespace) -> TimeMLP:
    """The shared field after ``args.cnf_training_steps`` steps of FFJORD on :func:`moons`.

    Maximum likelihood through course_pkg's CNF with RK4 (8 steps) and Hutchinson's trace
    (Rademacher noise), Adam at ``args.lr``, batches of 256: the training of chapter 5.
    """
    network = shared_field(features, FIELD_SEED)
    model = NormalizingFlow(CNF(network, method="rk4", steps=8, trace="hutchinson"), StandardNormal(features))
    torch.manual_seed(TRAIN_SEED)
    batches = moons(features, args.cnf_training_steps * 256, TRAIN_SEED).split(256)
    step = training_step(negative_log_likelihood(model.log_prob), torch.optim.Adam(network.parameters(), lr=args.lr),
                         batches)
    with torch_threads(args.threads):
        for _ in range(args.cnf_training_steps):
            step()
    return network


def workload(kind: str, features: int, args: argparse.Namespace) -> tuple[TimeMLP, Tensor]:
    """The field and the ``[batch, features]`` points of one CNF workload, ``kind`` one of ``FIELDS``."""
    if kind == "initial":
        x = torch.randn(args.batch, features, generator=torch.Generator().manual_seed(INPUT_SEED))
        return shared_field(features, FIELD_SEED), x
    return trained_field(features, args), moons(features, args.batch, HELD_OUT_SEED)


@dataclass
class Reference:
    """The exact ``log_prob`` of a field on some points, by float64 RK4, and an estimate of its own error."""

    log_prob: Tensor
    error: float


def reference_log_prob(network: nn.Module, x: Tensor, steps: int) -> Reference:
    """float64 RK4 with ``steps`` steps and the exact trace; its error estimated from ``steps / 2``.

    RK4's error falls 16-fold when the steps double, so ``|p_steps - p_half| / 15`` estimates the
    error of ``p_steps``.
    """
    network = copy.deepcopy(network).double()
    points = x.double()

    def log_prob(num_steps: int) -> Tensor:
        flow = NormalizingFlow(CNF(network, method="rk4", steps=num_steps), StandardNormal(x.shape[1]).double())
        with torch.no_grad():
            return flow.log_prob(points)

    fine = log_prob(steps)
    return Reference(fine, (fine - log_prob(steps // 2)).abs().max().item() / 15)


# ----------------------------------------------------------------------------------- the CNFs


@dataclass
class Density:
    """One library's CNF: its ``log_prob`` and its counted field (for the parameters and the evaluations)."""

    log_prob: Callable[[Tensor], Tensor]
    field: Counted


def course_pkg_cnf(network: nn.Module, features: int, trace: str, tolerance: float) -> Density:
    field = Counted(network)
    flow = CNF(field, method="dopri5", rtol=tolerance, atol=tolerance, trace=trace, noise="gaussian")
    return Density(NormalizingFlow(flow, StandardNormal(features)).log_prob, field)


def zuko_cnf(network: nn.Module, features: int, trace: str, tolerance: float) -> Density:
    from zuko.distributions import DiagNormal
    from zuko.distributions import NormalizingFlow as ZukoFlow
    from zuko.transforms import FreeFormJacobianTransform

    field = Counted(network)
    transform = FreeFormJacobianTransform(
        f=field, t0=0.0, t1=1.0, phi=tuple(field.parameters()), atol=tolerance, rtol=tolerance, exact=trace == "exact"
    )
    base = DiagNormal(torch.zeros(features), torch.ones(features))
    return Density(ZukoFlow(transform, base).log_prob, field)


CNF_BUILDERS: dict[str, Callable[[nn.Module, int, str, float], Density]] = {
    "course_pkg": course_pkg_cnf,
    "zuko": zuko_cnf,
}


def nll_step(density: Density, x: Tensor) -> Callable[[], None]:
    """Forward and backward of the mean NLL (the gradients are cleared first, as a training step would)."""
    parameters = list(density.field.parameters())

    def call() -> None:
        for parameter in parameters:
            parameter.grad = None
        (-density.log_prob(x).mean()).backward()

    return call


def evaluations(density: Density, call: Callable[[], None], repeats: int = 3) -> float:
    """Mean evaluations of the field per ``call`` (Hutchinson's noise, so the steps, change from call to call)."""
    density.field.calls = 0
    for _ in range(repeats):
        call()
    return density.field.calls / repeats


# ----------------------------------------------------------------------------------- flow matching


def course_pkg_step(field: nn.Module, coupling: str) -> Callable[[Tensor], Tensor]:
    """course_pkg's loss: data at t = 0, noise at t = 1."""
    return lambda x: flow_matching_loss(field, x, coupling)


def torchcfm_step(field: nn.Module, coupling: str) -> Callable[[Tensor], Tensor]:
    """torchcfm's matcher (noise x0 at t = 0, data x1 at t = 1), with course_pkg's reduction of the squared error."""
    from torchcfm.conditional_flow_matching import (
        ConditionalFlowMatcher,
        ExactOptimalTransportConditionalFlowMatcher,
    )

    matcher = (ConditionalFlowMatcher if coupling == "independent" else ExactOptimalTransportConditionalFlowMatcher)(
        sigma=0.0
    )

    def loss(x: Tensor) -> Tensor:
        t, xt, ut = matcher.sample_location_and_conditional_flow(torch.randn_like(x), x)
        return (field(t, xt) - ut).pow(2).sum(dim=1).mean()

    return loss


FM_LOSSES: dict[str, Callable[[nn.Module, str], Callable[[Tensor], Tensor]]] = {
    "course_pkg": course_pkg_step,
    "torchcfm": torchcfm_step,
}
SAMPLING_TIMES = {"course_pkg": (1.0, 0.0), "torchcfm": (0.0, 1.0)}  # from noise to data



def fm_variants(libraries: Sequence[str]) -> list[tuple[str, str]]:
    """``(library, coupling)`` for every flow-matching library present."""
    return [(library, coupling) for coupling in COUPLINGS for library in libraries if library in FM_LOSSES]


@dataclass
class Trained:
    seconds: float
    nfe: int
    w2: float


def train_and_sample(library: str, coupling: str, args: argparse.Namespace, held_out: Tensor) -> Trained:
    """Train ``args.steps`` steps from the shared field, sample ``args.samples`` points, their W2 to ``held_out``."""
    network = shared_field(2, FIELD_SEED)
    torch.manual_seed(TRAIN_SEED)
    np.random.seed(TRAIN_SEED)  # torchcfm's minibatch OT draws its pairs with numpy
    batches = toy_data("two_moons", args.steps * args.train_batch, seed=TRAIN_SEED).split(args.train_batch)
    step = training_step(FM_LOSSES[library](network, coupling), torch.optim.Adam(network.parameters(), lr=args.lr),
                         batches)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = time.perf_counter() - start
    field = Counted(network)
    noise = torch.randn(args.samples, 2, generator=torch.Generator().manual_seed(NOISE_SEED))
    t0, t1 = SAMPLING_TIMES[library]
    with torch.no_grad():
        samples = odeint(field, noise, t0, t1, method="dopri5", rtol=args.sample_tolerance, atol=args.sample_tolerance)
    return Trained(seconds, field.calls, wasserstein2(samples, held_out))


# ----------------------------------------------------------------------------------- measuring


def ratio(timings: dict[str, Timing]) -> Ratio | None:
    """course_pkg / the fastest other in ``timings``, or None when there is no pair to compare."""
    fastest = fastest_other({name: timing.median for name, timing in timings.items()})
    if fastest is None:
        return None
    per_round = [a / b for a, b in zip(timings['course_pkg'].round_medians, timings[fastest].round_medians, strict=True)]
    return Ratio(timings['course_pkg'].median / timings[fastest].median, fastest, per_round)


# ----------------------------------------------------------------------------------- reporting


def available(libraries: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The libraries that import (zuko's transforms, torchcfm's matchers), and a reason for each that does not."""
    modules = {"zuko": "zuko.transforms", "torchcfm": "torchcfm.conditional_flow_matching"}
    return _measure.available(libraries, lambda library: library in modules and importlib.import_module(modules[library]))


def cnf_section(libraries: Sequence[str], args: argparse.Namespace) -> dict[tuple[str, int, str, bool], Ratio | None]:
    """Time ``log_prob`` of every CNF configuration, libraries interleaved; print times, evaluations, errors, ratios.

    After each field's rows, the exact trace once more at *equal accuracy*: each library at the
    loosest of its tolerances whose error is at most the larger of the libraries' errors at
    ``args.tolerance`` (their error norms differ, so equal tolerances are not equal accuracy).
    """
    cnfs = [name for name in libraries if name in CNF_BUILDERS]
    print(f"\nCNF log_prob, batch {args.batch}, dopri5 rtol = atol = {args.tolerance:g}, {args.threads} thread(s): "
          f"ms per call, evaluations of the field per call (forward [+ backward]), ms per evaluation; "
          f"'error': the largest |log p - reference| over {ERROR_POINTS} points, exact trace, reference by float64 "
          f"RK4 with {args.reference_steps} steps")
    print(f"  {'':38}" + "".join(f"{name:>30}" for name in cnfs) + "   ratio")
    ratios = {}
    for kind in args.fields:
        for features in args.dims:
            start = time.perf_counter()
            network, x = workload(kind, features, args)
            reference = reference_log_prob(network, x[:ERROR_POINTS], args.reference_steps)
            print(f"  {kind} field, {features}-D" + (f" (trained in {time.perf_counter() - start:.0f} s)"
                                                     if kind == "trained" else "")
                  + f"; the reference's own error {reference.error:.1e}")
            for trace in TRACES:
                densities = {name: CNF_BUILDERS[name](copy.deepcopy(network), features, trace, args.tolerance)
                             for name in cnfs}
                for with_grad in (True, False):
                    label = f"{features:2}-D {trace:10} {'fwd+bwd' if with_grad else 'no grad'}"
                    ratios[(kind, features, trace, with_grad)] = timed_row(label, densities, with_grad, x, args)
                if trace == "exact":
                    errors = {name: log_prob_error(density, x, reference) for name, density in densities.items()}
            print(f"    {f'{features:2}-D error of exact log_prob':36}" + "".join(f"{errors[n]:>30.1e}" for n in cnfs))
            if len(cnfs) < 2:
                continue
            target = max(errors.values())
            matched = {name: loosest_tolerance(name, network, features, x, reference, target, args.tolerance)
                       for name in cnfs}
            print(f"    equal accuracy, each at its loosest tolerance with error <= {target:.1e}: "
                  + ", ".join(f"{name} {found.tolerance:.1e} (error {found.error:.1e})" for name, found in matched.items()))
            densities = {name: CNF_BUILDERS[name](copy.deepcopy(network), features, "exact", matched[name].tolerance)
                         for name in cnfs}
            for with_grad in (True, False):
                label = f"{features:2}-D exact, equal acc. {'fwd+bwd' if with_grad else 'no grad'}"
                ratios[(kind, features, "exact, equal accuracy", with_grad)] = timed_row(label, densities, with_grad,
                                                                                        x, args)
    return ratios


def timed_row(label: str, densities: dict[str, Density], with_grad: bool, x: Tensor,
              args: argparse.Namespace) -> Ratio | None:
    """Time ``log_prob`` (``with_grad``: and its backward) of each density, print one row, return the ratio."""
    make = nll_step if with_grad else log_prob_call
    calls = {name: make(density, x) for name, density in densities.items()}
    nfe = {name: evaluations(densities[name], calls[name]) for name in densities}
    timings = measure(calls, args.threads, args.rounds, args.min_run_time)
    found = ratio(timings)
    cells = "".join(f"{timings[n].median * 1e3:10.1f} ms {nfe[n]:6.1f} ev "
                    f"{timings[n].median * 1e3 / nfe[n]:6.3f}" for n in densities)
    print(f"    {label:36}{cells}   {found.describe() if found else 'n/a'}", flush=True)
    return found


@dataclass
class Matched:
    """A tolerance of course_pkg's CNF and the error of its exact ``log_prob`` there."""

    tolerance: float
    error: float


def loosest_tolerance(name: str, network: nn.Module, features: int, x: Tensor, reference: Reference, target: float,
                      tolerance: float) -> Matched:
    """The loosest ``tolerance * 10^(j/2)``, ``j = 4, 3, ..., -6``, at which ``name``'s exact ``log_prob`` errs by at most ``target``.

    ``target`` is one library's error at ``tolerance``, so every library reaches it somewhere on
    the ladder unless float32 rounding stops it; then the tightest rung is taken and its error shown.
    """
    for j in range(4, -7, -1):
        candidate = tolerance * 10 ** (j / 2)
        error = log_prob_error(CNF_BUILDERS[name](copy.deepcopy(network), features, "exact", candidate), x, reference)
        if error <= target:
            break
    return Matched(candidate, error)


def log_prob_error(density: Density, x: Tensor, reference: Reference) -> float:
    """The largest ``|log p - reference|`` over the reference's points, ``log p`` computed on all of ``x``.

    On all of ``x`` because an adaptive solver chooses its steps for the whole batch.
    """
    with torch.no_grad():
        log_prob = density.log_prob(x)[: len(reference.log_prob)]
    return (log_prob.double() - reference.log_prob).abs().max().item()


def fm_timing_section(libraries: Sequence[str], args: argparse.Namespace) -> dict[tuple[int, str], Ratio | None]:
    """Flow-matching training steps per second at each batch, libraries interleaved."""
    variants = fm_variants(libraries)
    print(f"\nflow-matching training steps per second (loss, backward, Adam lr {args.lr:g}), 2-D two moons, "
          f"TimeMLP(2, {HIDDEN}), {args.threads} thread(s)")
    print(f"  {'':12}" + "".join(f"{f'{lib} {coupling}':>26}" for lib, coupling in variants))
    ratios = {}
    for batch in args.fm_batches:
        batches = toy_data("two_moons", 16 * batch, seed=TRAIN_SEED).split(batch)
        calls = {}
        for library, coupling in variants:
            network = shared_field(2, FIELD_SEED)
            optimizer = torch.optim.Adam(network.parameters(), lr=args.lr)
            calls[f"{library} {coupling}"] = training_step(FM_LOSSES[library](network, coupling), optimizer, batches)
        timings = measure(calls, args.threads, args.rounds, args.min_run_time)
        cells = "".join(f"{1 / timings[name].median:16.0f} steps/s" for name in calls)
        print(f"  batch {batch:<6}{cells}")
        for coupling in COUPLINGS:
            pair = {lib: timings[f"{lib} {coupling}"] for lib, c in variants if c == coupling}
            ratios[(batch, coupling)] = ratio(pair)
            print(f"    time ratio, {coupling:12} {ratios[(batch, coupling)].describe() if ratios[(batch, coupling)] else 'n/a'}")
    return ratios


def end_to_end_section(libraries: Sequence[str], args: argparse.Namespace) -> dict[str, Trained | float]:
    """Train each variant, sample, and print training time, evaluations to sample and W2 to held-out data."""
    held_out = toy_data("two_moons", args.samples, seed=HELD_OUT_SEED)
    floor = wasserstein2(toy_data("two_moons", args.samples, seed=FLOOR_SEED), held_out)
    print(f"\nend to end: {args.steps:,} steps at batch {args.train_batch}, Adam lr {args.lr:g}, seed {TRAIN_SEED}; "
          f"{args.samples:,} samples by dopri5 rtol = atol = {args.sample_tolerance:g}; "
          f"W2 to {args.samples:,} held-out points, {args.threads} thread(s)")
    print(f"  {'':24}{'train time':>12}{'NFE to sample':>15}{'W2':>9}")
    results: dict[str, Trained | float] = {"floor": floor}
    with torch_threads(args.threads):
        for library, coupling in fm_variants(libraries):
            trained = train_and_sample(library, coupling, args, held_out)
            results[f"{library} {coupling}"] = trained
            print(f"  {f'{library} {coupling}':24}{trained.seconds:10.1f} s{trained.nfe:15d}{trained.w2:9.4f}",
                  flush=True)
    print(f"  {'floor (two data samples)':24}{'':12}{'':15}{floor:9.4f}")
    return results


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--libraries", nargs="+", default=list(LIBRARIES), choices=LIBRARIES)
    parser.add_argument("--batch", type=int, default=512, help="CNF log_prob batch")
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 16], help="CNF dimensions")
    parser.add_argument("--tolerance", type=float, default=1e-5, help="CNF rtol = atol, both libraries")
    parser.add_argument("--fields", nargs="+", default=list(FIELDS), choices=FIELDS,
                        help="CNF fields: the initial random one, and that one trained on two moons")
    parser.add_argument("--cnf-training-steps", type=int, default=400, help="FFJORD steps that make the trained field")
    parser.add_argument("--reference-steps", type=int, default=128, help="float64 RK4 steps of the exact log_prob")
    parser.add_argument("--fm-batches", type=int, nargs="+", default=[256, 1024], help="flow-matching timing batches")
    parser.add_argument("--steps", type=int, default=3000, help="end-to-end training steps")
    parser.add_argument("--train-batch", type=int, default=256, help="end-to-end training batch")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--samples", type=int, default=2000, help="samples and held-out points for W2")
    parser.add_argument("--sample-tolerance", type=float, default=1e-4, help="rtol = atol of the sampling ODE")
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds, libraries interleaved")
    parser.add_argument("--min-run-time", type=float, default=0.3, help="seconds per blocked_autorange")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for every measurement")
    args = parser.parse_args(argv)
    if min(args.batch, *args.dims, *args.fm_batches, args.steps, args.train_batch, args.samples, args.rounds,
           args.threads, args.cnf_training_steps) < 1 or args.reference_steps < 2 or args.reference_steps % 2:
        parser.error("sizes, --rounds and --threads must be positive, --reference-steps even and at least 2")

    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs ({platform.system()} {platform.machine()}), "
          f"Python {platform.python_version()}, torch {torch.__version__}, {args.threads} thread(s) for torch")
    print(load_line("at start"))
    libraries, missing = available(args.libraries)
    print("libraries: " + ", ".join(f"{name} {version(name)}" for name in libraries))
    for name, reason in missing.items():
        print(f"  {name}: {reason}")
    print(f"field: TimeMLP(D, {HIDDEN}) = Linear(D + 1, {HIDDEN})-Tanh-Linear({HIDDEN}, {HIDDEN})-Tanh-Linear({HIDDEN}, D), "
          f"every layer drawn from seed {FIELD_SEED} and copied into each library's copy")
    print("notes:")
    for name in libraries:
        print(f"  {name:11} {NOTES[name]}")

    results: dict[str, object] = {"libraries": libraries, "missing": missing}
    results["cnf"] = cnf_section(libraries, args)
    results["fm_steps"] = fm_timing_section(libraries, args)
    results["end_to_end"] = end_to_end_section(libraries, args)

    print(load_line("at end"))
    print("\ntargets: time ratio course_pkg / fastest other <= 1.0")
    for (kind, features, trace, with_grad), found in results["cnf"].items():
        if found is not None:
            print(f"  CNF {kind} field, {features}-D {trace} {'fwd+bwd' if with_grad else 'no grad'}: "
                  f"{'met' if found.value <= 1.0 else 'NOT met'} ({found.describe()})")
    for (batch, coupling), found in results["fm_steps"].items():
        if found is not None:
            print(f"  flow matching {coupling}, batch {batch}: {'met' if found.value <= 1.0 else 'NOT met'} "
                  f"({found.describe()})")
    return results


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"\n(total {time.perf_counter() - start:.0f} s)")
    sys.exit(0)
