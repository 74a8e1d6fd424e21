"""Input pipeline memory and latency: peak RSS and time to the first batch, one fresh process per case.

    .venv/bin/python bench/memory.py                 # all cases
    .venv/bin/python bench/memory.py --cases a,b     # some of them
    .venv/bin/python bench/memory.py --json out.jsonl

Cases (each in its own subprocess, so that one case's peak does not hide another's):

  a  `load_source("shapes:24000", image_size=224).dataset(224, batch_size=16, shuffle=True)`,
     20 batches: the case of issue 13 (147 s and 14.3 GB before streaming).
  b  the demo's training input: shapes train 24000 at 64 px (1-4 objects of 20-60%), batch 16,
     shuffled, flips, built the way `ssd_keras demo` builds it (`make_dataset(data.records, ...)`);
     20 batches, then 300 more to measure images/s (the demo's model trains ~60-100 img/s on 2 cores).
  c  in-memory records (`make_shapes(3000, 224)`, 430 MB of pixels) through `make_dataset`:
     how much the pipeline adds on top of the records themselves (copies of the pixels).

Measured on 2 shared CPU cores (load average 5-7 from other jobs, so times are noisy; rows in
bench/results/memory.jsonl):

| case | before (in-memory shapes, stacked copies) | after (streamed shapes, in-place arrays) |
|---|---|---|
| a: first batch / peak RSS | 701 s / 14573 MB | 1.5 s / 715 MB |
| b: first batch / peak RSS / pipeline img/s | 51 s / 1831 MB / 3722 | 2.8-4.9 s / 683 MB / 207-215 |
| c: peak RSS above the records | 2399 - 1106 = 1293 MB | 1203 - 1106 = 97 MB |
| training, CPU ms per image (demo model) | 9.3-10.9 (in memory) | 13.5 (streamed), i.e. ~3.5 ms generating |

Peak RSS is the child's `ru_maxrss` (the child is forked by a small process: see `_MEASURE`);
`rss_data_mb` is the resident size right after the data source was built (before
`make_dataset`). Times include building the source (generating images, for the in-memory
path) and the `tf.data` graph, not importing TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_s():
    """CPU seconds (user + system, all threads) this process has used: unlike img/s, hardly
    affected by other processes on the same cores."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _case(name):
    """Run one case in this process; returns a result dict."""
    import tensorflow as tf  # noqa: F401 - imported before the clock starts

    from ssd_keras.data import RandomFlip, load_source, make_dataset, make_shapes

    rss_start = _rss_mb()
    t0 = time.perf_counter()
    more = 0
    if name == "a":
        data = load_source("shapes:24000", image_size=224)
        rss_data = _rss_mb()
        ds = data.dataset(image_size=224, batch_size=16, shuffle=True)
    elif name == "b":
        data = load_source("shapes", split="train", count=24000, image_size=64, seed=0, min_size=0.2,
                           max_size=0.6, max_objects=4)
        rss_data = _rss_mb()
        ds = make_dataset(data.records, image_size=64, batch_size=16, augment=[RandomFlip()], shuffle=True,
                          seed=0)
        more = 300
    elif name == "c":
        data = make_shapes(3000, image_size=224)
        rss_data = _rss_mb()
        ds = make_dataset(data, image_size=224, batch_size=16, shuffle=True, seed=0)
    elif name in ("train-stream", "train-memory"):
        return _train_case(name)
    else:
        raise ValueError(f"unknown case {name!r}")
    it = iter(ds)
    next(it)
    first = time.perf_counter() - t0
    for _ in range(19):
        next(it)
    t20 = time.perf_counter() - t0
    rate = None
    if more:
        t = time.perf_counter()
        n = sum(int(next(it)[0].shape[0]) for _ in range(more))
        rate = n / (time.perf_counter() - t)
    return {"bench": "memory", "case": name, "first_batch_s": round(first, 2), "twenty_batches_s": round(t20, 2),
            "images_per_s": None if rate is None else round(rate, 1),
            "rss_start_mb": round(rss_start), "rss_data_mb": round(rss_data),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "cpus": len(os.sched_getaffinity(0))}


def _train_case(name, steps=150):
    """The demo's model of 2026-11-29 (tiny body, 64 px, batch 16, focal loss, flips) trained on
    streamed vs in-memory shapes: does generating on the fly (on the same 2 cores) slow training
    down?"""
    import keras

    from ssd_keras.anchors import AnchorConfig
    from ssd_keras.data import RandomFlip, make_dataset, make_shapes
    from ssd_keras.data.shapes import ShapesData
    from ssd_keras.losses import SSDLoss
    from ssd_keras.model import build_ssd

    keras.utils.set_random_seed(0)
    kw = dict(image_size=64, seed=0, min_size=0.2, max_size=0.6, max_objects=4)
    data = ShapesData(24000, **kw) if name == "train-stream" else make_shapes(3 * steps * 16, **kw)
    ds = make_dataset(data, 64, 16, augment=[RandomFlip()], shuffle=True, seed=0, repeat=True)
    anchors = AnchorConfig()
    model = build_ssd(6, anchors, backbone="tiny", weights=None, image_size=64, dropout=0.0, head_filters=128)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=SSDLoss(anchors, 6, pos_threshold=0.5,
                                                                          focal=(0.25, 1.0)))
    model.fit(ds, steps_per_epoch=30, epochs=1, verbose=0)  # warm-up: tracing, thread pools
    cpu, t = _cpu_s(), time.perf_counter()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
    rate = steps * 16 / (time.perf_counter() - t)
    cpu_ms = (_cpu_s() - cpu) / (steps * 16) * 1e3
    return {"bench": "memory", "case": name, "first_batch_s": None, "twenty_batches_s": None,
            "images_per_s": round(rate, 1), "cpu_ms_per_image": round(cpu_ms, 2), "rss_start_mb": None,
            "rss_data_mb": None,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "cpus": len(os.sched_getaffinity(0))}


def run(cases="abc"):
    """Each case in a fresh interpreter (with this checkout first on the path); list of dicts."""
    rows = []
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    for c in cases:
        # Forked by a small process, as in `cli_case`, so the child's own ru_maxrss is its peak.
        via_small = [sys.executable, "-c", "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"]
        out = subprocess.run([*via_small, sys.executable, os.path.abspath(__file__), "--child", c], env=env,
                             capture_output=True, text=True, check=False)
        if out.returncode:
            raise RuntimeError(f"case {c} failed:\n{out.stderr[-3000:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


# The CLI commands whose peak RSS `bench/run.py` reports (issue 13: memory must not grow with
# the data set). Quick settings keep them to minutes on 2 busy cores; `full=True` runs the demo
# as users run it and more training images.
def cli_commands(out_dir, full=False):
    """{case: argv after `python -m ssd_keras`}."""
    demo = ["demo", "--out", os.path.join(out_dir, "demo")]
    if not full:
        demo += ["--epochs", "1", "--train-images", "1600", "--val-images", "100"]
    train = ["train", "--data", "shapes", "--image-size", "224", "--weights", "none", "--epochs", "1",
             "--val-split", "none", "--batch-size", "16", "--train-images", "2000" if full else "64",
             "--out", os.path.join(out_dir, "train224")]
    return {"demo": demo, "train --image-size 224 (shapes)": train}


# Linux keeps the high-water RSS of the address space that `exec` replaces, so a process forked
# from a large one reports at least the parent's size as its own `ru_maxrss`: under bench/run.py
# (TensorFlow, PyTorch and the benchmark models loaded, ~1.7 GB) a demo of 1.0 GB read 1.7 GB,
# and even /bin/true forked from a 1.5 GB Python reads 1.5 GB. So the measured command is forked
# by this small Python process instead (~15 MB), which writes the command's wait4 usage to a file.
_MEASURE = """\
import json, os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
with open(sys.argv[1], "w") as f:
    json.dump({"maxrss_kb": usage.ru_maxrss, "cpu_s": usage.ru_utime + usage.ru_stime,
               "exit_code": os.waitstatus_to_exitcode(status)}, f)
"""


def cli_case(argv, env=None):
    """Run `python -m ssd_keras ARGV` in a child; its wall time, peak RSS (the command's own
    `ru_maxrss`, forked from a small process: see `_MEASURE`), exit code, and the mAP line
    when it prints one."""
    import re
    import tempfile

    env = dict(env or os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    with tempfile.TemporaryFile("w+") as log, tempfile.TemporaryDirectory() as tmp:
        usage_file = os.path.join(tmp, "usage.json")
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", _MEASURE, usage_file, sys.executable, "-m", "ssd_keras", *argv],
                       stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT, check=True)
        wall = time.perf_counter() - t0
        with open(usage_file) as f:
            usage = json.load(f)
        log.seek(0)
        text = log.read()
    m = re.search(r"mAP[^0-9]*([0-9.]+)", text)
    row = {"bench": "memory", "command": "python -m ssd_keras " + " ".join(argv), "wall_s": round(wall, 1),
           "peak_rss_mb": round(usage["maxrss_kb"] / 1024), "cpu_s": round(usage["cpu_s"], 1),
           "exit_code": usage["exit_code"], "map": float(m.group(1)) if m else None}
    if usage["exit_code"]:
        row["error"] = text.strip().splitlines()[-1][:300] if text.strip() else f"exit {usage['exit_code']}"
    return row


def run_cli(quick=True, out_dir=None):
    """Rows for `bench/run.py`: peak RSS and wall time of the demo and of `train --image-size 224`."""
    import tempfile

    out_dir = out_dir or tempfile.mkdtemp(prefix="ssd_bench_")
    rows = []
    for case, argv in cli_commands(out_dir, full=not quick).items():
        r = cli_case(argv)
        notes = f"`{r['command']}`; {r['wall_s']:.0f} s wall, {r['cpu_s']:.0f} CPU s"
        if r["map"] is not None:
            notes += f"; mAP {r['map']:.3f}"
        rows.append({"bench": "memory", "case": f"{case}: peak RSS", "value": r["peak_rss_mb"], "unit": "MB",
                     "notes": notes, "error": r.get("error"), "raw": r})
    return rows


def run_for_bench(quick=True, **_):
    return run_cli(quick)


def markdown(rows):
    out = ["| case | first batch s | 20 batches s | img/s after | CPU ms/img | RSS data MB | peak RSS MB |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['case']} | {r['first_batch_s'] or '-'} | {r['twenty_batches_s'] or '-'} | "
                   f"{r['images_per_s'] or '-'} | {r.get('cpu_ms_per_image') or '-'} | {r['rss_data_mb'] or '-'} | "
                   f"{r['peak_rss_mb']} |")
    return "\n".join(out)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default="a,b,c", help="comma-separated: a, b, c, train-stream, train-memory")
    p.add_argument("--json", help="append the rows to this .jsonl file")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(_case(args.child)))
        sys.exit(0)
    rows = run([c.strip() for c in args.cases.split(",") if c.strip()])
    print(markdown(rows))
    if args.json:
        with open(args.json, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
