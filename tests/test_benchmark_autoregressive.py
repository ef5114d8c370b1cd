"""benchmarks/compare_autoregressive.py keeps running: its course_pkg part, tiny, without the other libraries."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_autoregressive.py"
SECTIONS = ("parameters", "MAF log_prob", "MAF training step", "MAF sampling", "IAF sampling", "IAF log_prob",
            "spline coupling flow", "spline kernel alone", "spline kernel forward", "spline kernel inverse", "summary")


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compare_autoregressive", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_run(bench: ModuleType) -> tuple[dict, str]:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        results = bench.main(["--libraries", "course_pkg", "--batch", "32", "--kernel-size", "20000",
                              "--rounds", "1", "--min-run-time", "0.01"])
    return results, printed.getvalue()


def test_a_tiny_run_prints_every_section(tiny_run: tuple[dict, str]) -> None:
    results, printed = tiny_run
    assert results["libraries"] == ["course_pkg"] and results["missing"] == {}
    for section in SECTIONS:
        assert section in printed, f"the output has no {section!r} section:\n{printed}"
    assert "n/a" in printed, "with course_pkg alone there is no ratio to print"


def test_course_pkg_spline_kernel_round_trips_without_nans(tiny_run: tuple[dict, str]) -> None:
    check = tiny_run[0]["checks"]["course_pkg"]
    assert check.nans == 0
    assert check.from_course_pkg == 0.0
    assert check.round_trip_in_y < 1e-5, "a few float32 steps of y near the bound 5 (each 4.8e-7)"
    assert check.round_trip < 1e-2, "flat bins (dy/dx down to ~1e-5) magnify that in x, no more"


def test_the_kernel_inputs_reach_the_identity_tails_and_pass_them_through(bench: ModuleType) -> None:
    x, params = bench.kernel_inputs(10_000, seed=0)
    outside = x.abs() > bench.BOUND
    assert x.dtype == torch.float32 and 0.1 < outside.float().mean() < 0.25  # 1/6 expected
    y, ladj = bench.course_pkg_spline(x, params, False)
    assert torch.equal(y[outside], x[outside]) and torch.equal(ladj[outside], torch.zeros(int(outside.sum())))


def test_the_course_pkg_models_have_the_stated_widths(bench: ModuleType) -> None:
    made = 8 * 64 + 64 + 64 * 64 + 64 + 64 * 16 + 16  # MADE (64, 64) to 2 numbers per feature, masks not counted
    assert bench.build("maf", "course_pkg", 0).num_parameters == 5 * made
    assert bench.build("iaf", "course_pkg", 0).num_parameters == 5 * made
    mlp = 4 * 64 + 64 + 64 * 64 + 64 + 64 * 4 * 23 + 4 * 23  # kept half to 3 K - 1 = 23 numbers per feature
    assert bench.build("spline_coupling", "course_pkg", 0).num_parameters == 4 * mlp

