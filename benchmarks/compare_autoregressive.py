"""course_pkg against zuko, nflows and normflows: autoregressive and spline flows (chapter 4), speed and accuracy.

One run, side by side on this machine, the same workload for every library, all torch threads:

  * MAF, 5 masked affine autoregressive layers, MADE conditioners (64, 64) SiLU, D = 8:
    - ``log_prob`` at batch 4096 without gradients (one MADE pass per layer);
    - one training step (forward, backward, Adam) at batch 4096;
    - sampling 4096 points (the slow direction: D sequential MADE passes per layer);
  * IAF, the same layers the other way round: sampling (one pass per layer) and ``log_prob``
    (D passes per layer) at 4096;
  * a spline coupling flow, 4 couplings (alternating halves), rational-quadratic splines of 8 bins
    on [-5, 5] with identity tails, (64, 64) SiLU MLP conditioners, D = 8: ``log_prob`` and
    backward at batch 4096;
  * the spline kernel alone on 1e6 float32 scalars uniform in [-6, 6] (some in the identity tails)
    with the same random unnormalised parameters: forward and inverse time, the largest round-trip
    error |inverse(forward(x)) - x|, NaN counts, and the largest difference from course_pkg's y.

Times are medians of ``torch.utils.benchmark.Timer(...).blocked_autorange()`` blocks, in rounds
that interleave the libraries (see ``_measure.py``). Each figure is followed by the ratio
course_pkg / fastest other library and by that ratio's range over the rounds.

Identical means: the same D, layers, batch, seed and data; conditioners of the same widths and
activation (two hidden layers of 64, SiLU) in every library, and the same spline (8 bins, bound 5,
linear tails). Initial weights are each library's own (timing does not depend on them). What stays
different is each library's own layer: its affine scale parameterisation, how it permutes between
layers, its spline parameterisation (zuko's differs, nflows' and normflows' equal course_pkg's up
to a shift of the derivative parameters, which is applied); the run prints these notes.

The other libraries are for benchmarking only (the course never imports them). Install them with

    pip install --no-deps -r benchmarks/requirements.txt

(--no-deps keeps the pinned CPU torch; see that file). A library that is missing or fails is
reported as such and left out of the ratios.

Usage:  python benchmarks/compare_autoregressive.py [--rounds 5] [--min-run-time 0.4] [--batch 4096]
                                                    [--kernel-size 1000000]
                                                    [--libraries course_pkg zuko nflows normflows]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from course_pkg.distributions import NormalizingFlow, StandardNormal
from course_pkg.flows import Inverse, Sequential
from course_pkg.flows.autoregressive import MaskedAutoregressive
from course_pkg.flows.split_coupling import SplitCoupling
from course_pkg.flows.transformers import Affine, RationalQuadraticSpline
from course_pkg.models import vector_couplings

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helpers next to this script, however it is loaded
import _measure  # noqa: E402
from _measure import (  # noqa: E402
    IgnoreContext, Ratio, Timing, load_line, log_prob_call, measure, negative_log_likelihood, print_timings,
    training_step,
)

# nflows' and normflows' couplings warn that a conditioner with a random last layer is "bad initialisation"
warnings.filterwarnings("ignore", message="Inputs to the softmax are not scaled down")

LIBRARIES = ("course_pkg", "zuko", "nflows", "normflows")
FEATURES, HIDDEN = 8, 64
MAF_LAYERS, COUPLINGS = 5, 4
BINS, BOUND = 8, 5.0
KERNEL_RANGE = 6.0  # inputs uniform in [-6, 6]: a sixth of them lie in the identity tails
MIN_BIN, MIN_DERIVATIVE = 1e-3, 1e-3  # course_pkg's, nflows' and normflows' defaults
# nflows and normflows take d = m_d + softplus(u); course_pkg d = m_d + softplus(u + shift), so that u = 0 is d = 1
DERIVATIVE_SHIFT = math.log(math.expm1(1 - MIN_DERIVATIVE))

NOTES = {
    "course_pkg": "MaskedAutoregressive(Affine()): log-scale 3 tanh(a / 3), orders natural / reversed in turn; IAF = "
    "Inverse(...); couplings: SplitCoupling(RationalQuadraticSpline(8, bound 5)) on halves",
    "zuko": "MAF (MonotonicAffineTransform, orders natural / reversed); IAF = its layers' .inv; coupling = "
    "NSF(passes=2): a masked MLP over all 8 inputs (the same widths) instead of an MLP on the kept half; its "
    "spline soft-clips the raw parameters, takes d = exp(u) and has no minimum bin, so the same raw parameters "
    "make a different spline (its y differs from course_pkg's)",
    "nflows": "MaskedAffineAutoregressiveTransform (scale sigmoid(a + 2) + 1e-3, MADE without residual blocks), "
    "ReversePermutation between layers; IAF = InverseTransform; PiecewiseRationalQuadraticCouplingTransform",
    "normflows": "MaskedAffineAutoregressive as written runs its MADE in the sampling direction, so its log_prob "
    "takes D passes per layer (its slow path): that is the IAF rows; for MAF it is wrapped data-to-latent, as "
    "normflows itself wraps its AutoregressiveRationalQuadraticSpline; Permute(shuffle) between layers; coupling: "
    "PiecewiseRationalQuadraticCoupling with the MLP conditioner, wrapped data-to-latent",
}
COMMON_NOTE = (
    "every library: D = 8, conditioners Linear-SiLU-Linear-SiLU-Linear (64, 64), each library's own initial "
    "weights, the same seed, batch and data; spline 8 bins on [-5, 5], identity (linear) tails"
)


# ----------------------------------------------------------------------------------- the models


@dataclass
class Model:
    """One library's flow: the module (for parameters), its ``log_prob`` and its ``sample``."""

    module: nn.Module
    log_prob: Callable[[Tensor], Tensor]
    sample: Callable[[int], Tensor]

    @property
    def num_parameters(self) -> int:
        return sum(parameter.numel() for parameter in self.module.parameters())


def mlp(in_features: int, out_features: int) -> nn.Sequential:
    """The coupling conditioner every library gets: Linear-SiLU-Linear-SiLU-Linear, widths 64."""
    return nn.Sequential(
        nn.Linear(in_features, HIDDEN), nn.SiLU(), nn.Linear(HIDDEN, HIDDEN), nn.SiLU(), nn.Linear(HIDDEN, out_features)
    )


def course_pkg_flow(transform: Sequential) -> Model:
    model = NormalizingFlow(transform, StandardNormal(FEATURES))
    return Model(model, model.log_prob, model.sample)


def course_pkg_autoregressive(inverse: bool) -> Model:
    layers = [
        MaskedAutoregressive(FEATURES, Affine(), (HIDDEN, HIDDEN), order="natural" if k % 2 == 0 else "reversed")
        for k in range(MAF_LAYERS)
    ]
    return course_pkg_flow(Sequential(*(Inverse(layer) if inverse else layer for layer in layers)))


def course_pkg_spline_coupling() -> Model:
    spline = RationalQuadraticSpline(bins=BINS, bound=BOUND)
    couplings = vector_couplings(
        lambda features, parity, conditioner: SplitCoupling(features, parity, conditioner, spline),
        spline.params_per_feature, FEATURES, COUPLINGS, HIDDEN,
    )
    return course_pkg_flow(Sequential(*couplings))


def zuko_flow(flow: nn.Module) -> Model:
    return Model(flow, lambda x: flow().log_prob(x), lambda n: flow().sample((n,)))


def zuko_autoregressive(inverse: bool) -> Model:
    import zuko

    maf = zuko.flows.MAF(FEATURES, transforms=MAF_LAYERS, hidden_features=(HIDDEN, HIDDEN), activation=nn.SiLU)
    if not inverse:
        return zuko_flow(maf)
    return zuko_flow(zuko.lazy.Flow([layer.inv for layer in maf.transform.transforms], maf.base))


def zuko_spline_coupling() -> Model:
    import zuko

    return zuko_flow(zuko.flows.NSF(FEATURES, transforms=COUPLINGS, bins=BINS, passes=2,
                                    hidden_features=(HIDDEN, HIDDEN), activation=nn.SiLU))


def nflows_flow(layers: list[nn.Module]) -> Model:
    from nflows.distributions.normal import StandardNormal as NflowsNormal
    from nflows.flows.base import Flow
    from nflows.transforms.base import CompositeTransform

    flow = Flow(CompositeTransform(layers), NflowsNormal([FEATURES]))
    return Model(flow, flow.log_prob, flow.sample)


def nflows_autoregressive(inverse: bool) -> Model:
    from nflows.transforms.autoregressive import MaskedAffineAutoregressiveTransform
    from nflows.transforms.base import InverseTransform
    from nflows.transforms.permutations import ReversePermutation

    layers: list[nn.Module] = []
    for k in range(MAF_LAYERS):
        if k > 0:
            layers.append(ReversePermutation(FEATURES))
        layer = MaskedAffineAutoregressiveTransform(FEATURES, HIDDEN, num_blocks=1, use_residual_blocks=False,
                                                    activation=nn.functional.silu)
        layers.append(InverseTransform(layer) if inverse else layer)
    return nflows_flow(layers)


def _transformed_mask(parity: int) -> Tensor:
    """The mask nflows and normflows take (1: transformed), keeping the halves course_pkg's couplings keep."""
    transformed = torch.ones(FEATURES, dtype=torch.int64)
    half = FEATURES // 2
    transformed[slice(0, half) if parity == 0 else slice(half, FEATURES)] = 0
    return transformed


def nflows_spline_coupling() -> Model:
    from nflows.transforms.coupling import PiecewiseRationalQuadraticCouplingTransform

    layers = [
        PiecewiseRationalQuadraticCouplingTransform(
            _transformed_mask(k % 2), lambda d_in, d_out: IgnoreContext(mlp(d_in, d_out)), num_bins=BINS,
            tails="linear", tail_bound=BOUND,
        )
        for k in range(COUPLINGS)
    ]
    return nflows_flow(layers)


def normflows_flow(flows: list[nn.Module]) -> Model:
    """``flows`` in normflows' order, latent to data (its ``log_prob`` runs them backwards, inverting each)."""
    import normflows

    model = normflows.NormalizingFlow(normflows.distributions.DiagGaussian(FEATURES, trainable=False), flows)
    return Model(model, model.log_prob, lambda n: model.sample(n)[0])


def _data_to_latent(layer: nn.Module) -> nn.Module:
    """A normflows flow whose ``inverse`` is ``layer``'s forward: what normflows' spline wrappers do."""
    import normflows

    class DataToLatent(normflows.flows.Flow):
        def __init__(self) -> None:
            super().__init__()
            self.layer = layer

        def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
            x, log_det = self.layer.inverse(z)
            return x, log_det.view(-1)

        def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
            z, log_det = self.layer(x)
            return z, log_det.view(-1)

    return DataToLatent()


def normflows_autoregressive(inverse: bool) -> Model:
    import normflows

    flows: list[nn.Module] = []
    for k in range(MAF_LAYERS):
        if k > 0:
            flows.append(normflows.flows.Permute(FEATURES, mode="shuffle"))
        layer = normflows.flows.MaskedAffineAutoregressive(FEATURES, HIDDEN, num_blocks=1, use_residual_blocks=False,
                                                           activation=nn.functional.silu)
        flows.append(layer if inverse else _data_to_latent(layer))
    return normflows_flow(flows[::-1])


def normflows_spline_coupling() -> Model:
    from normflows.flows.neural_spline.coupling import PiecewiseRationalQuadraticCoupling

    flows = [
        _data_to_latent(PiecewiseRationalQuadraticCoupling(
            _transformed_mask(k % 2), lambda d_in, d_out: IgnoreContext(mlp(d_in, d_out)), num_bins=BINS,
            tails="linear", tail_bound=BOUND,
        ))
        for k in range(COUPLINGS)
    ]
    return normflows_flow(flows[::-1])


AUTOREGRESSIVE: dict[str, Callable[[bool], Model]] = {
    "course_pkg": course_pkg_autoregressive,
    "zuko": zuko_autoregressive,
    "nflows": nflows_autoregressive,
    "normflows": normflows_autoregressive,
}
SPLINE_COUPLING: dict[str, Callable[[], Model]] = {
    "course_pkg": course_pkg_spline_coupling,
    "zuko": zuko_spline_coupling,
    "nflows": nflows_spline_coupling,
    "normflows": normflows_spline_coupling,
}


def build(workload: str, library: str, seed: int) -> Model:
    """``library``'s model for ``workload`` (``"maf"``, ``"iaf"`` or ``"spline_coupling"``), built after seeding."""
    torch.manual_seed(seed)
    if workload == "spline_coupling":
        return SPLINE_COUPLING[library]()
    return AUTOREGRESSIVE[library](workload == "iaf")


# ----------------------------------------------------------------------------------- the spline kernel

Spline = Callable[[Tensor, Tensor, bool], tuple[Tensor, Tensor]]  # (inputs, raw params [N, 3K - 1], inverse)


def course_pkg_spline(x: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
    spline = RationalQuadraticSpline(bins=BINS, bound=BOUND, min_bin_size=MIN_BIN, min_derivative=MIN_DERIVATIVE)
    return spline.inverse(x, params) if inverse else spline(x, params)


def zuko_spline(x: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
    from zuko.transforms import MonotonicRQSTransform

    transform = MonotonicRQSTransform(*params.split((BINS, BINS, BINS - 1), dim=-1), bound=BOUND, slope=MIN_DERIVATIVE)
    if inverse:
        transform = transform.inv
    return transform.call_and_ladj(x)


def _nflows_style(function: Callable[..., tuple[Tensor, Tensor]]) -> Spline:
    def spline(x: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        widths, heights, derivatives = params.split((BINS, BINS, BINS - 1), dim=-1)
        return function(x, widths, heights, derivatives + DERIVATIVE_SHIFT, inverse=inverse, tails="linear",
                        tail_bound=BOUND, min_bin_width=MIN_BIN, min_bin_height=MIN_BIN, min_derivative=MIN_DERIVATIVE)

    return spline


def nflows_spline(x: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
    from nflows.transforms.splines.rational_quadratic import unconstrained_rational_quadratic_spline

    return _nflows_style(unconstrained_rational_quadratic_spline)(x, params, inverse)


def normflows_spline(x: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
    from normflows.utils.splines import unconstrained_rational_quadratic_spline

    return _nflows_style(unconstrained_rational_quadratic_spline)(x, params, inverse)


SPLINES: dict[str, Spline] = {
    "course_pkg": course_pkg_spline,
    "zuko": zuko_spline,
    "nflows": nflows_spline,
    "normflows": normflows_spline,
}
SPLINE_NOTES = {
    "course_pkg": "RationalQuadraticSpline(8, bound 5): bins m + (1 - m K) softmax(u), d = m_d + softplus(u + shift)",
    "zuko": "MonotonicRQSTransform(bound 5, slope 1e-3): u / (1 + |2 u / ln 1e-3|) soft-clip, bins softmax, d = exp(u) "
    "(a different spline from the same raw parameters)",
    "nflows": "unconstrained_rational_quadratic_spline(tails='linear', tail_bound 5): course_pkg's spline, given the "
    "derivative parameters + ln(e^(1 - 1e-3) - 1)",
    "normflows": "normflows.utils.splines.unconstrained_rational_quadratic_spline: as nflows",
}


@dataclass
class KernelCheck:
    """One library's spline on the kernel inputs: round trip, NaNs, and distance from course_pkg's ``y``."""

    round_trip: float  # max |inverse(forward(x)) - x|
    round_trip_in_y: float  # the same error times dy/dx: in y's units, what float32 rounding of y leaves
    nans: int  # NaNs in y, its log-derivative, the round trip and its log-derivative
    from_course_pkg: float  # max |y - y_course_pkg|


def kernel_inputs(size: int, seed: int) -> tuple[Tensor, Tensor]:
    """``size`` float32 scalars uniform in [-6, 6] and standard normal raw parameters ``[size, 3K - 1]``."""
    generator = torch.Generator().manual_seed(seed)
    x = (2 * torch.rand(size, generator=generator) - 1) * KERNEL_RANGE
    return x, torch.randn(size, 3 * BINS - 1, generator=generator)


def check_kernel(spline: Spline, x: Tensor, params: Tensor, reference: Tensor | None) -> KernelCheck:
    with torch.no_grad():
        y, ladj = spline(x, params, False)
        back, back_ladj = spline(y, params, True)
    nans = sum(int(t.isnan().sum()) for t in (y, ladj, back, back_ladj))
    distance = math.nan if reference is None else (y - reference).abs().max().item()
    error = (back - x).abs()
    return KernelCheck(error.max().item(), (error * ladj.exp()).max().item(), nans, distance)


def kernel_call(spline: Spline, x: Tensor, params: Tensor, inverse: bool) -> Callable[[], None]:
    def call() -> None:
        with torch.no_grad():
            spline(x, params, inverse)

    return call


# ----------------------------------------------------------------------------------- the sections


def backward_call(model: Model, x: Tensor) -> Callable[[], None]:
    """``log_prob`` and backward, no optimiser step: the spline coupling's workload."""

    def call() -> None:
        model.module.zero_grad(set_to_none=True)
        model.log_prob(x).mean().neg().backward()

    return call


def sample_call(model: Model, num_samples: int) -> Callable[[], None]:
    def call() -> None:
        with torch.no_grad():
            model.sample(num_samples)

    return call


def timed(title: str, calls: dict[str, Callable[[], object]], args: argparse.Namespace) -> Ratio | None:
    """Measure ``calls`` (libraries interleaved) with all threads; print the table and ratio."""
    threads = torch.get_num_threads()
    timings: dict[int, dict[str, Timing]] = {threads: measure(calls, threads, args.rounds, args.min_run_time)}
    return print_timings(title, timings)[threads]


def autoregressive_sections(libraries: Sequence[str], x: Tensor, args: argparse.Namespace) -> dict[str, Ratio | None]:
    batch = x.shape[0]
    maf = {name: build("maf", name, args.seed) for name in libraries}
    iaf = {name: build("iaf", name, args.seed) for name in libraries}
    trained = {name: build("maf", name, args.seed) for name in libraries}
    batches = list(x.split(batch)) + [x.flip(0)]
    steps = {name: training_step(negative_log_likelihood(model.log_prob), torch.optim.Adam(model.module.parameters(), lr=1e-3), batches)
             for name, model in trained.items()}
    layers = f"{MAF_LAYERS} layers, MADE ({HIDDEN}, {HIDDEN}), D = {FEATURES}"
    return {
        "maf_log_prob": timed(f"MAF log_prob without gradients, {layers}, batch {batch} (one pass a layer)",
                              {name: log_prob_call(model, x) for name, model in maf.items()}, args),
        "maf_step": timed(f"MAF training step (forward, backward, Adam), batch {batch}", steps, args),
        "maf_sample": timed(f"MAF sampling {batch} (the slow direction: D passes a layer)",
                            {name: sample_call(model, batch) for name, model in maf.items()}, args),
        "iaf_sample": timed(f"IAF sampling {batch}, {layers} (the fast direction: one pass a layer)",
                            {name: sample_call(model, batch) for name, model in iaf.items()}, args),
        "iaf_log_prob": timed(f"IAF log_prob without gradients, batch {batch} (the slow direction: D passes a layer)",
                              {name: log_prob_call(model, x) for name, model in iaf.items()}, args),
    }


def spline_coupling_section(libraries: Sequence[str], x: Tensor, args: argparse.Namespace) -> Ratio | None:
    models = {name: build("spline_coupling", name, args.seed) for name in libraries}
    return timed(f"spline coupling flow log_prob + backward, {COUPLINGS} couplings, RQS {BINS} bins on "
                 f"[-{BOUND:g}, {BOUND:g}], MLP ({HIDDEN}, {HIDDEN}), batch {x.shape[0]}",
                 {name: backward_call(model, x) for name, model in models.items()}, args)


def kernel_section(libraries: Sequence[str], args: argparse.Namespace) -> dict[str, object]:
    x, params = kernel_inputs(args.kernel_size, args.seed)
    outside = (x.abs() > BOUND).float().mean().item()
    print(f"\nspline kernel alone: {args.kernel_size:,} float32 scalars uniform in [-{KERNEL_RANGE:g}, "
          f"{KERNEL_RANGE:g}] ({outside:.1%} outside the bound, in the identity tails), {BINS} bins, bound {BOUND:g}, "
          f"the same standard normal raw parameters for all")
    for name in libraries:
        print(f"  {name:11} {SPLINE_NOTES[name]}")
    with torch.no_grad():
        reference = SPLINES["course_pkg"](x, params, False)[0] if "course_pkg" in libraries else None
    checks = {name: check_kernel(SPLINES[name], x, params, reference) for name in libraries}
    print(f"  {'':12}{'max |inverse(forward(x)) - x|':>31}{'the same x dy/dx':>18}{'NaNs':>7}"
          f"{'max |y - y_course_pkg|':>25}")
    for name, check in checks.items():
        print(f"  {name:12}{check.round_trip:31.3e}{check.round_trip_in_y:18.3e}{check.nans:7d}"
              f"{check.from_course_pkg:25.3e}")
    print("  (the round trip loses most where the spline is flattest: an error of a few float32 steps in y "
          "becomes that over dy/dx in x; x dy/dx undoes this)")
    forward = timed("spline kernel forward (y and log-derivative)",
                    {name: kernel_call(SPLINES[name], x, params, False) for name in libraries}, args)
    y = reference if reference is not None else x
    inverse = timed("spline kernel inverse",
                    {name: kernel_call(SPLINES[name], y, params, True) for name in libraries}, args)
    return {"checks": checks, "kernel_forward": forward, "kernel_inverse": inverse}


# ----------------------------------------------------------------------------------- the run


def check_library(library: str) -> None:
    """Build every model and run the spline once: a library that cannot is left out."""
    x = torch.zeros(4, FEATURES)
    for workload in ("maf", "iaf", "spline_coupling"):
        model = build(workload, library, 0)
        model.log_prob(x)
        model.sample(2)
    SPLINES[library](torch.zeros(4), torch.zeros(4, 3 * BINS - 1), True)


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--libraries", nargs="+", default=list(LIBRARIES), choices=LIBRARIES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=4096, help="batch of every flow workload")
    parser.add_argument("--kernel-size", type=int, default=1_000_000, help="scalars for the spline kernel")
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds, libraries interleaved")
    parser.add_argument("--min-run-time", type=float, default=0.4, help="seconds per blocked_autorange")
    args = parser.parse_args(argv)
    if min(args.batch, args.kernel_size, args.rounds) < 1:
        parser.error("--batch, --kernel-size and --rounds must be positive")

    print(_measure.machine_line())
    print(load_line("at start"))
    libraries, missing = _measure.available(args.libraries, check_library)
    _measure.print_libraries(libraries, missing)
    print(f"seed {args.seed}; all timings with {torch.get_num_threads()} threads")
    print("notes:")
    print(f"  {COMMON_NOTE}")
    for name in libraries:
        print(f"  {name:11} {NOTES[name]}")
    print("\nparameters          " + "".join(f"{name:>12}" for name in libraries))
    for workload in ("maf", "spline_coupling"):
        counts = "".join(f"{build(workload, name, args.seed).num_parameters:>12,}" for name in libraries)
        print(f"  {workload:18}{counts}")

    x = torch.randn(args.batch, FEATURES, generator=torch.Generator().manual_seed(args.seed))
    results: dict[str, object] = {"libraries": libraries, "missing": missing}
    results.update(autoregressive_sections(libraries, x, args))
    results["spline_coupling"] = spline_coupling_section(libraries, x, args)
    results.update(kernel_section(libraries, args))

    print(load_line("at end"))
    print("\nsummary: course_pkg / fastest other (<= 1.0: course_pkg is at least as fast)")
    for key, value in results.items():
        if isinstance(value, Ratio):
            print(f"  {key:16} {value.describe()}")
    return results


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"\n(total {time.perf_counter() - start:.0f} s)")
