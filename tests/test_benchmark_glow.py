"""benchmarks/glow_gpu.py keeps running: its tiny CPU size, every mode and every figure it prints."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "glow_gpu.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("glow_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_tiny_benchmark_measures_every_mode_and_writes_its_figures(tmp_path: Path, capsys) -> None:
    results = load_benchmark().main(["--tiny", "--out", str(tmp_path), "--no-budget-compile"])
    assert json.loads((tmp_path / "glow_gpu.json").read_text()) == json.loads(json.dumps(results))
    assert set(results["throughput"]) == {"float32", "bf16", "float32 + compile", "bf16 + compile"}
    assert all(entry["images_per_second"] > 0 for entry in results["throughput"].values())
    assert results["sampling_images_per_second"] > 0
    for mode in ("float32", "bf16"):
        budget = results["budget"][mode]
        assert 0 < budget["test_bits_per_dim"] < 8 and budget["steps"] > 1 and budget["training_seconds"] >= 5
    assert len(results["targets"]) == 3
    printed = capsys.readouterr().out
    assert "not a GPU figure" in printed and "bf16 training images/s >= 5000" in printed


def test_a_part_alone_decides_only_its_own_targets(tmp_path: Path) -> None:
    results = load_benchmark().main(["--tiny", "--out", str(tmp_path), "--parts", "budget", "--budget-modes", "bf16",
                                     "--no-budget-compile"])
    assert "throughput" not in results and set(results["budget"]) == {"bf16"}
    assert list(results["targets"]) == ["test bits/dim <= 1.15 in the budget"]
