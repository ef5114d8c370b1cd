"""benchmarks/glow_gpu.py keeps running: its tiny CPU size, every mode and every figure it prints."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "glow_gpu.py"


def test_the_tiny_benchmark_measures_every_mode_and_writes_its_figures(tmp_path: Path, capsys) -> None:
    spec = importlib.util.spec_from_file_location("glow_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    results = module.main(["--tiny", "--out", str(tmp_path), "--no-budget-compile"])
    assert json.loads((tmp_path / "glow_gpu.json").read_text()) == json.loads(json.dumps(results))
    assert set(results["throughput"]) == {"float32", "bf16", "float32 + compile", "bf16 + compile"}
    assert all(entry["images_per_second"] > 0 for entry in results["throughput"].values())
    assert results["sampling_images_per_second"] > 0
    for mode in ("float32", "bf16"):
        budget = results["budget"][mode]
        assert 0 < budget["test_bits_per_dim"] < 8 and budget["steps"] > 1 and budget["training_seconds"] >= 5
    assert len(results["targets"]) == 3
    printed = capsys.readouterr().out
    assert "not a GPU figure" in printed and "target >= 5000" in printed
