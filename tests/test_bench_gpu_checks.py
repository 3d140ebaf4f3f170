"""bench/gpu_checks.py, the GPU rows as one prepared run: its benches run (tiny, on the CPU), each
one's output is kept in its file, and one that fails or outlasts its limit is reported while the
next still runs."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import gpu_checks  # noqa: E402


def test_the_smoke_run_runs_every_bench_and_keeps_its_output(tmp_path: Path) -> None:
    assert gpu_checks.main(["--smoke", "--out", str(tmp_path)]) == 0
    throughput = (tmp_path / "gpu_throughput.txt").read_text()
    assert "tirg + resnet18, 32 px, batch 8" in throughput and "the fastest step's consumption" in throughput
    overhead = (tmp_path / "regularizer_overhead.txt").read_text()
    for variant in ("none", "ga isotropic", "ga adversarial", "ga fgsm", "dim", "cmap", "mmgrad"):
        assert f"\n{variant} " in overhead


def test_a_failing_or_overlong_bench_is_reported(tmp_path: Path) -> None:
    failed = gpu_checks.run_check("gpu_throughput", ["--no-such-option"], 60, tmp_path)
    assert failed.startswith("gpu_throughput: failed (exit 2)")
    assert "unrecognized arguments: --no-such-option" in (tmp_path / "gpu_throughput.txt").read_text()
    _, smoke, _ = gpu_checks.CHECKS["gpu_throughput"]
    assert gpu_checks.run_check("gpu_throughput", smoke, 1, tmp_path) == "gpu_throughput: stopped at its limit of 1 s"
