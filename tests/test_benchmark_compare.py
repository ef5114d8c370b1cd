"""benchmarks/compare_libraries.py keeps running: its course_pkg part, tiny, without the other libraries."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_libraries.py"


@pytest.fixture(scope="module")
def compare() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compare_libraries", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_shared_initial_weights_make_course_pkg_start_as_the_identity(compare: ModuleType) -> None:
    model = compare.build("course_pkg", compare.TWO_D, seed=0)
    assert model.num_parameters == 8 * (1 * 64 + 64 + 64 * 64 + 64 + 64 * 2 + 2)  # split: 1 in, 2 out
    x = torch.randn(16, 2)
    expected = -0.5 * (x.pow(2).sum(dim=1) + 2 * torch.log(torch.tensor(2 * torch.pi)))
    torch.testing.assert_close(model.log_prob(x), expected)  # zero last layers: N(0, I)
    first, _, _ = model.conditioners[0]
    again, _, _ = compare.build("course_pkg", compare.TWO_D, seed=0).conditioners[0]
    assert torch.equal(first.weight, again.weight), "the same seed gives the same initial weights"


def test_a_tiny_run_prints_every_section_and_the_targets(compare: ModuleType, capsys: pytest.CaptureFixture) -> None:
    threads = torch.get_num_threads()
    results = compare.main(
        ["--libraries", "course_pkg", "--steps", "5", "--seeds", "2", "--batch", "32", "--held-out", "100",
         "--log-prob-batch", "64", "--rounds", "1", "--min-run-time", "0.01"]
    )
    printed = capsys.readouterr().out
    assert torch.get_num_threads() == threads, "the NLL part restores the thread count"
    assert results["libraries"] == ["course_pkg"]
    assert len(results["nll"]["course_pkg"]) == 2 and all(map(math.isfinite, results["nll"]["course_pkg"]))
    for section in ("parameters", "time per training step", "log_prob without gradients", "held-out NLL", "targets"):
        assert section in printed, f"the output has no {section!r} section:\n{printed}"
    assert "n/a" in printed, "with course_pkg alone there is no ratio to print"


def test_other_libraries_are_imported_only_when_asked_for(compare: ModuleType) -> None:
    before = set(sys.modules)
    compare.available(["course_pkg"])
    assert not {name for name in set(sys.modules) - before if name.split(".")[0] in ("zuko", "nflows", "normflows")}


def test_ratios_compare_with_the_fastest_other_overall_and_round_by_round(compare: ModuleType, capsys) -> None:
    def timing(*round_medians: float) -> object:
        return compare.Timing(times=list(round_medians), round_medians=list(round_medians))

    column = {"course_pkg": timing(1.0, 2.0, 1.5), "slow": timing(3.0, 3.0, 3.0), "fast": timing(1.25, 1.6, 1.5)}
    ratio = compare.print_timings("title", {1: column})[1]
    assert ratio.against == "fast"
    assert ratio.value == pytest.approx(1.5 / 1.5)
    assert ratio.per_round == pytest.approx([0.8, 1.25, 1.0])
    assert ratio.describe() == "1.000 against fast; per round 0.80 to 1.25, at most 1.0 in 2 of 3"
    assert "1.000 (vs fast)" in capsys.readouterr().out
