"""benchmarks/compare_continuous.py keeps running: its course_pkg part, tiny, without the other libraries."""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_continuous.py"
TINY = ["--libraries", "course_pkg", "--batch", "32", "--dims", "2", "3", "--fm-batches", "32", "--steps", "200",
        "--train-batch", "64", "--samples", "200", "--rounds", "2", "--min-run-time", "0.01",
        "--cnf-training-steps", "3", "--reference-steps", "8"]


@pytest.fixture(scope="module")
def compare() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compare_continuous", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_shared_field_is_the_same_nonzero_function_for_every_copy(compare: ModuleType) -> None:
    t, z = torch.tensor(0.3), torch.randn(8, 3)
    field = compare.shared_field(3, seed=0)
    again = compare.shared_field(3, seed=0)
    torch.testing.assert_close(field(t, z), again(t, z), rtol=0, atol=0)
    assert field(t, z).abs().min() > 0, "every layer is drawn, the last one too: the CNF's field is not zero"


def test_the_counted_field_counts_the_solver_s_evaluations(compare: ModuleType) -> None:
    density = compare.course_pkg_cnf(compare.shared_field(2, seed=0), 2, "exact", 1e-5)
    x = torch.randn(16, 2)
    nfe = compare.evaluations(density, compare.log_prob_call(density, x), repeats=2)
    assert nfe >= 6 and nfe == int(nfe), "dopri5 evaluates the field at least once per stage, the same each call"


def test_a_tiny_run_prints_every_section_with_sane_figures(compare: ModuleType, capsys: pytest.CaptureFixture) -> None:
    threads = torch.get_num_threads()
    results = compare.main(TINY)
    printed = capsys.readouterr().out
    assert torch.get_num_threads() == threads, "the end-to-end part restores the thread count"
    assert results["libraries"] == ["course_pkg"]
    for section in ("CNF log_prob", "flow-matching training steps per second", "end to end", "floor", "targets"):
        assert section in printed, f"the output has no {section!r} section:\n{printed}"
    assert len(results["cnf"]) == 2 * 2 * 2 * 2 and all(ratio is None for ratio in results["cnf"].values())
    assert "n/a" in printed, "with course_pkg alone there is no ratio to print"
    end_to_end = results["end_to_end"]
    floor = end_to_end["floor"]
    assert math.isfinite(floor) and floor > 0
    for coupling in ("independent", "ot"):
        trained = end_to_end[f"course_pkg {coupling}"]
        assert trained.seconds > 0 and trained.nfe >= 6
        assert math.isfinite(trained.w2) and trained.w2 > 0


def test_training_brings_the_samples_towards_the_data(compare: ModuleType) -> None:
    args = argparse.Namespace(steps=200, train_batch=64, lr=3e-3, samples=200, sample_tolerance=1e-4)
    held_out = compare.toy_data("two_moons", 200, seed=compare.HELD_OUT_SEED)
    noise = torch.randn(200, 2, generator=torch.Generator().manual_seed(compare.NOISE_SEED))
    trained = compare.train_and_sample("course_pkg", "ot", args, held_out)
    assert trained.w2 < 0.8 * compare.wasserstein2(noise, held_out), "200 steps of flow matching beat the noise itself"


def test_ratios_compare_with_the_fastest_other_round_by_round(compare: ModuleType) -> None:
    def timing(*round_medians: float) -> object:
        return compare.Timing(times=list(round_medians), round_medians=list(round_medians))

    found = compare.ratio({"course_pkg": timing(1.0, 2.0, 1.5), "slow": timing(3.0, 3.0, 3.0),
                           "fast": timing(1.25, 1.6, 1.5)})
    assert found.against == "fast" and found.value == pytest.approx(1.0)
    assert found.per_round == pytest.approx([0.8, 1.25, 1.0])
    assert compare.ratio({"course_pkg": timing(1.0)}) is None


def test_the_equal_accuracy_tolerance_reaches_its_target(compare: ModuleType) -> None:
    network = compare.shared_field(2, seed=0)
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(0))
    reference = compare.reference_log_prob(network, x, steps=16)
    assert reference.error < 1e-7, "RK4 with 16 steps on the initial field is far below the solvers' errors"
    at_default = compare.log_prob_error(compare.course_pkg_cnf(network, 2, "exact", 1e-5), x, reference)
    found = compare.loosest_tolerance("course_pkg", network, 2, x, reference, at_default / 4, 1e-5)
    assert found.error <= at_default / 4 and found.tolerance in [1e-5 * 10 ** (j / 2) for j in range(4, -7, -1)]
