"""What the library comparisons in this folder share: timing, ratios, the machine line, missing libraries.

Times are medians of ``torch.utils.benchmark.Timer(...).blocked_autorange()`` blocks, measured in
rounds that interleave the libraries (so a slow spell of the machine hits them all). A ratio is
course_pkg / the fastest other library, over all blocks and within each round.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import math
import os
import platform
import statistics
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.utils import benchmark

INSTALL_HINT = "pip install --no-deps -r benchmarks/requirements.txt"


@dataclass
class Timing:
    times: list[float] = field(default_factory=list)  # seconds per call, one per blocked_autorange block
    round_medians: list[float] = field(default_factory=list)  # seconds per call, one per round

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def spread(self) -> float:
        """Interquartile range relative to the median."""
        if len(self.times) < 4:
            return 0.0
        q1, _, q3 = statistics.quantiles(self.times, n=4)
        return (q3 - q1) / self.median


@contextlib.contextmanager
def torch_threads(num_threads: int) -> Iterator[None]:
    """Run the block with ``num_threads`` torch threads, restoring the previous count afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def measure(
    calls: dict[str, Callable[[], object]], num_threads: int, rounds: int, min_run_time: float
) -> dict[str, Timing]:
    """Median time of each call with ``num_threads``; the libraries take turns in each round."""
    timings = {name: Timing() for name in calls}
    for name, call in calls.items():  # warm-up: first-call allocations, lazy initialisation
        for _ in range(3):
            call()
    for _ in range(rounds):
        for name, call in calls.items():
            timer = benchmark.Timer(stmt="call()", globals={"call": call}, num_threads=num_threads, label=name)
            result = timer.blocked_autorange(min_run_time=min_run_time)
            timings[name].times.extend(result.times)
            timings[name].round_medians.append(result.median)
    return timings


def training_step(
    loss: Callable[[Tensor], Tensor], optimizer: torch.optim.Optimizer, batches: Sequence[Tensor]
) -> Callable[[], None]:
    """One step (``loss`` of a batch, backward, Adam) on the next of ``batches``, cycling."""
    position = [0]

    def step() -> None:
        x = batches[position[0] % len(batches)]
        position[0] += 1
        optimizer.zero_grad(set_to_none=True)
        loss(x).backward()
        optimizer.step()

    return step


def negative_log_likelihood(log_prob: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """The training loss of a density, ``x -> -mean(log_prob(x))``."""
    return lambda x: -log_prob(x).mean()


def log_prob_call(model: object, x: Tensor) -> Callable[[], None]:
    """``model.log_prob(x)`` without gradients, as one timed call."""
    def call() -> None:
        with torch.no_grad():
            model.log_prob(x)

    return call


def available(libraries: Sequence[str], check: Callable[[str], object]) -> tuple[list[str], dict[str, str]]:
    """The libraries that import and pass ``check(library)``, and a reason for each that does not."""
    ready, missing = [], {}
    for library in libraries:
        try:
            if library != "course_pkg":
                importlib.import_module(library)
            check(library)
        except ImportError as error:
            missing[library] = f"not installed ({error}); {INSTALL_HINT}"
        except Exception as error:  # a library that cannot run here is reported, not faked
            missing[library] = f"cannot run here: {type(error).__name__}: {error}"
        else:
            ready.append(library)
    return ready, missing


def version(library: str) -> str:
    try:
        return importlib.metadata.version(library)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_line() -> str:
    """CPU, CPU count, torch's threads, OS, Python and torch versions."""
    return (f"machine: {cpu_model()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads for torch "
            f"({platform.system()} {platform.machine()}), Python {platform.python_version()}, torch {torch.__version__}")


def load_line(when: str) -> str:
    """The 1-minute load average: timings from a machine busy with other work are slower and noisier."""
    if not hasattr(os, "getloadavg"):
        return f"load average {when}: unknown"
    load = os.getloadavg()[0]
    busy = load > 1.5 + 0.25 * (os.cpu_count() or 1)  # this run itself keeps about one CPU busy
    warning = " -- the machine is busy with other work: times are inflated and noisy, rerun when quiet" if busy else ""
    return f"load average {when}: {load:.2f}{warning}"


def print_libraries(libraries: Sequence[str], missing: dict[str, str]) -> None:
    """The versions of the libraries that run, and why each of the others does not."""
    print("libraries: " + ", ".join(f"{name} {version(name)}" for name in libraries))
    for name, reason in missing.items():
        print(f"  {name}: {reason}")


def fastest_other(values: dict[str, float]) -> str | None:
    """The library other than course_pkg with the smallest value, or None when there is no pair to compare."""
    others = {name: value for name, value in values.items() if name != "course_pkg" and math.isfinite(value)}
    return min(others, key=others.get) if "course_pkg" in values and others else None


@dataclass
class Ratio:
    """course_pkg / ``against`` over all blocks, and the same ratio within each round (paired in time)."""

    value: float
    against: str
    per_round: list[float]

    def describe(self) -> str:
        under = sum(ratio <= 1.0 for ratio in self.per_round)
        return (f"{self.value:.3f} against {self.against}; per round {min(self.per_round):.2f} to "
                f"{max(self.per_round):.2f}, at most 1.0 in {under} of {len(self.per_round)}")


def print_timings(title: str, timings: dict[int, dict[str, Timing]]) -> dict[int, Ratio | None]:
    """A table of median times (one column per thread count) and, per column, course_pkg / fastest other.

    The ratio of the medians over all blocks, then its range over the rounds: in a round the
    libraries run one after the other, so a slow spell of a shared machine hits both sides of a
    round's ratio, and the range shows how far one run's figure can be trusted.
    """
    print(f"\n{title}")
    print(f"  {'':12}" + "".join(f"{f'{n} thread' + ('s' if n > 1 else ''):>22}" for n in timings))
    for name in next(iter(timings.values())):
        cells = "".join(f"{column[name].median * 1e3:12.3f} ms ±{column[name].spread * 100:3.0f}%"
                        for column in timings.values())
        print(f"  {name:12}{cells}")
    ratios: dict[int, Ratio | None] = {}
    cells = rounds = ""
    for n, column in timings.items():
        medians = {name: timing.median for name, timing in column.items()}
        fastest = fastest_other(medians)
        if fastest is None:
            ratios[n] = None
            cells += f"{'n/a':>22}"
            rounds += f"{'n/a':>22}"
            continue
        per_round = [ours / theirs for ours, theirs in
                     zip(column["course_pkg"].round_medians, column[fastest].round_medians, strict=True)]
        ratios[n] = Ratio(medians["course_pkg"] / medians[fastest], fastest, per_round)
        cells += f"{f'{ratios[n].value:.3f} (vs {fastest})':>22}"
        rounds += f"{f'{min(per_round):.2f} to {max(per_round):.2f}':>22}"
    print(f"  {'ratio':12}{cells}   (course_pkg / fastest other; ± is the IQR of the blocks)")
    print(f"  {'per round':12}{rounds}   (the same ratio within each round)")
    return ratios


class IgnoreContext(nn.Module):
    """A conditioner for nflows and normflows, which call it as ``net(inputs, context)``."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, inputs: Tensor, context: Tensor | None = None) -> Tensor:
        return self.network(inputs)
