"""The GPU rows of issues 8 and 12 as one prepared run, for a session lent a GPU machine for minutes:
bench/gpu_throughput.py (tirg + resnet18 at 224 px, batch 128: fp32 against bf16 + channels_last,
the feed against the step) and bench/regularizer_overhead.py on CUDA (resnet18, batch 128). Each
bench's output goes to the screen and to a file in --out; a bench that fails or outlasts its limit
is reported and the next one still runs.

    python3 bench/gpu_checks.py --out "$OUT"        # on the GPU machine
    python bench/gpu_checks.py --smoke --out /tmp/x  # here: the same benches, tiny, on the CPU

The two benches need torch, torchvision, Pillow and PyYAML only (no Ray, Optuna or pyarrow), which
the GPU machines' own Python holds.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent

# name -> (arguments on the GPU, arguments of the CPU smoke run, seconds allowed on the GPU)
CHECKS: dict[str, tuple[list[str], list[str], int]] = {
    "gpu_throughput": ([], ["--device", "cpu", "--images", "64", "--size", "32", "--batch", "8", "--steps", "2"], 300),
    "regularizer_overhead": (["--device", "cuda", "--image-encoder", "resnet18", "--batch-size", "128"],
                             ["--steps", "2", "--rounds", "1", "--scale", "0.01"], 240),
}


def run_check(name: str, arguments: list[str], limit_s: int, out: Path) -> str:
    """Runs one bench with its output to the screen and to out/<name>.txt; returns its verdict."""
    command = [sys.executable, str(BENCH / f"{name}.py"), *arguments]
    print(f"== {' '.join(command[1:])}", flush=True)
    began = time.time()
    stopped = threading.Event()

    with open(out / f"{name}.txt", "w") as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)

        def stop() -> None:
            stopped.set()
            process.kill()

        watchdog = threading.Timer(limit_s, stop)
        watchdog.start()
        with process.stdout:
            for line in process.stdout:
                print(line, end="", flush=True)
                log.write(line)
        code = process.wait()
        watchdog.cancel()
    if stopped.is_set():
        return f"{name}: stopped at its limit of {limit_s} s"
    return f"{name}: {'done' if code == 0 else f'failed (exit {code})'} in {time.time() - began:.0f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for each bench's output")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: checks the benches run")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    verdicts = [run_check(name, smoke if args.smoke else gpu, limit, args.out)
                for name, (gpu, smoke, limit) in CHECKS.items()]
    print("\n".join(["", *verdicts]))
    return 0 if all(verdict.split(": ")[1].startswith("done") for verdict in verdicts) else 1


if __name__ == "__main__":
    raise SystemExit(main())
