"""Run the real `python -m ssd_keras demo` and record its held-out mAP and wall time.

    python bench/demo.py                      # the default demo (what `make demo` runs)
    python bench/demo.py --json out/demo_bench.json -- --epochs 12   # extra demo flags after --

The demo runs in a subprocess, exactly as a user runs it, so the wall time includes start-up
(importing TensorFlow), data generation, training, evaluation and writing the outputs.
`run()` returns one row (a dict) for `bench/run.py`'s table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(quick=False, demo_args=(), out_dir=None):
    """Run the demo once; returns `[{"name", "map", "wall_s", "command", ...}]`.

    `quick=True` runs a 1-epoch, 64-px smoke version (to check the plumbing, not the mAP).
    """
    args = list(demo_args)
    if quick:
        args = ["--epochs", "1", "--image-size", "64", "--train-images", "64",
                "--val-images", "16"] + args
    out_dir = out_dir or tempfile.mkdtemp(prefix="ssd_demo_")
    cmd = [sys.executable, "-m", "ssd_keras", "demo", "--out", str(out_dir)] + args
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.time() - start
    if proc.returncode != 0:
        raise RuntimeError(f"demo failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    match = re.search(r"^mAP: ([0-9.]+)$", proc.stdout, re.M)
    metrics_path = Path(out_dir) / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    return [{
        "name": "demo (quick)" if quick else "demo",
        "map": float(match.group(1)) if match else None,
        "wall_s": round(wall, 1),
        "train_s": metrics.get("train_seconds"),
        "command": "python -m ssd_keras demo " + " ".join(args),
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "ap": metrics.get("ap"),
    }]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1-epoch smoke run")
    parser.add_argument("--json", type=Path, default=None, help="write the row(s) here")
    parser.add_argument("--out", type=Path, default=None, help="demo output folder")
    parser.add_argument("demo_args", nargs="*", help="extra flags for the demo (after --)")
    args = parser.parse_args(argv)
    rows = run(quick=args.quick, demo_args=args.demo_args, out_dir=args.out)
    print("| run | mAP (VOC07, held-out) | wall s | command |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['map']:.3f} | {r['wall_s']:.0f} | `{r['command']}` |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
