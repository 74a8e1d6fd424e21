"""Run every benchmark, print one Markdown table (absolute numbers and ratios), save JSON + Markdown.

    python bench/run.py                     # short settings: ~10 min on 2 busy cores, less on a quiet box
    python bench/run.py --full              # longer runs (batch 32, more rounds)
    python bench/run.py --mixed-precision   # add mixed-precision cases (bfloat16 on CPU, float16 on GPU)
    python bench/run.py --only peak,train_step --batch-size 8
    python bench/run.py --train-cases keras,keras-onednn,torch-eager,torch-compile
    python bench/run.py --out /tmp/bench    # where results go (default bench/results/)

Benchmarks (each a module here with `run(quick=True) -> list[dict]` and its own CLI):

| name | what | target |
|---|---|---|
| `peak` | fp32 matmul GFLOP/s (TF, torch, numpy): the reference for "fraction of peak" | — |
| `loss` | `SSDLoss` fwd+bwd (eager / tf.function / XLA) vs the lesson's per-image torch loop | ≥ 20× |
| `train_step` | Keras `fit` img/s (±XLA, ±mixed precision) vs the lesson's model in torch | ≥ 1.2× torch, ≥ 60 % of peak |
| `pipeline` | `tf.data` img/s (VOC sample, shapes; with augmentation) vs the training step | ≥ 5× |
| `inference` | `predict` img/s, decode + NMS share, batch-1 latency | NMS ≤ 5 % |
| `memory` | peak RSS (and wall time, mAP) of `python -m ssd_keras demo` and of `train --image-size 224` on shapes, each a child process | O(batch) |

The device is whatever TensorFlow picks (a GPU when there is one: the same command gives the
GPU table); PyTorch uses CUDA when it has it. Results are written as
`<out>/<UTC date-time>-<device>.json` (all raw rows + machine) and `.md` (the table), and
`<out>/latest.md`.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import math
import os
import sys
import time
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

BENCHMARKS = ("peak", "loss", "train_step", "pipeline", "inference", "memory")


def _call_run(module, quick, **kwargs):
    """`module.run(quick=..., **kwargs)`, passing only the keyword arguments it accepts."""
    params = inspect.signature(module.run).parameters
    accepted = {k: v for k, v in kwargs.items() if k in params and v is not None}
    return module.run(quick=quick, **accepted)


class _MemoryBench:
    """bench/memory.py's CLI cases behind the common `run(quick=...)`."""

    def __init__(self, module):
        self.module = module

    def run(self, quick=True):
        return self.module.run_cli(quick)


# --------------------------------------------------------------------------------------------
# Normalising colleagues' row formats into one table
# --------------------------------------------------------------------------------------------


def _normalise_loss(r):
    """bench/loss.py rows: name, loss kind, ms_per_batch, speedup vs the lesson loop."""
    lesson = r.get("speedup") == 1.0 and "lesson" in r.get("name", "")
    out = {
        "bench": "loss",
        "case": f"{r.get('name')} ({r.get('loss', 'bce')}, batch {r.get('batch')})",
        "value": r.get("ms_per_batch"),
        "unit": "ms/batch",
        "ratio": r.get("speedup"),
        "ratio_to": "speed-up vs lesson loop",
        "notes": f"value rel. diff {r['rel_diff']:.0e}" if isinstance(r.get("rel_diff"), float) else "",
    }
    if not lesson and "eager" not in r.get("name", ""):
        out["target"] = "≥ 20×"
        out["met"] = (r.get("speedup") or 0) >= 20
    return out


def _normalise_pipeline(r, train_ips):
    """bench/pipeline.py rows: data, augment, images_per_s; ratio vs the Keras training step."""
    case = f"{r.get('data')}{' + augment' if r.get('augment') else ''}"
    if r.get("image_size") and f"{r['image_size']}px" not in case:
        case += f", {r['image_size']}px"
    out = {"bench": "pipeline", "case": case, "value": r.get("images_per_s"), "unit": "img/s"}
    if train_ips and r.get("images_per_s") and r.get("batch_size"):
        out["ratio"] = r["images_per_s"] / train_ips
        out["ratio_to"] = "× Keras train step img/s"
        out["target"] = "≥ 5×"
        out["met"] = out["ratio"] >= 5
    return out


def normalise(name, rows, train_ips=None):
    """Rows in the common form: bench, case, value, unit, ratio, ratio_to, target, met, notes."""
    if name == "loss" and rows and "ms_per_batch" in rows[0]:
        return [_normalise_loss(r) for r in rows]
    if name == "pipeline" and rows and "images_per_s" in rows[0]:
        return [_normalise_pipeline(r, train_ips) for r in rows]
    out = []
    for r in rows:
        r = dict(r)
        r.setdefault("bench", name)
        r.setdefault("case", r.get("name", "?"))
        out.append(r)
    return out


def best_train_ips(rows):
    """Best Keras training img/s (the number the input pipeline must outrun)."""
    vals = [r["value"] for r in rows if r.get("bench") == "train_step" and r["case"].startswith("keras") and r.get("value")]
    return max(vals) if vals else None


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def _fmt(v, digits=3):
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if abs(v) >= 100:
            return f"{v:.0f}"
        return f"{v:.{digits}g}"
    return str(v)


def _notes(r):
    parts = []
    if r.get("error"):
        parts.append(f"ERROR {r['error']}")
    if r.get("peak_fraction") is not None:
        parts.append(f"{r['gflops']:.1f} GFLOP/s = {100 * r['peak_fraction']:.0f} % of peak")
    if r.get("batch_size") and r.get("bench") in ("train_step", "inference"):
        parts.append(f"batch {r['batch_size']}")
    if r.get("notes"):
        parts.append(r["notes"])
    return "; ".join(parts)


def markdown_table(rows):
    lines = ["| benchmark | case | value | unit | ratio | ratio is | target | met | notes |",
             "|---|---|---:|---|---:|---|---|---|---|"]
    for r in rows:
        ratio = r.get("ratio")
        ratio_s = "–" if ratio is None else (f"{100 * ratio:.1f} %" if "share" in r.get("ratio_to", "") else f"{ratio:.2f}×")
        lines.append(
            f"| {r.get('bench')} | {r.get('case')} | {_fmt(r.get('value'))} | {r.get('unit', '')} | {ratio_s} | "
            f"{r.get('ratio_to', '')} | {r.get('target', '')} | {_fmt(r.get('met')) if 'met' in r else ''} | {_notes(r)} |"
        )
    return "\n".join(lines)


def markdown_report(rows, machine, args_line, elapsed_s):
    m = machine
    head = [
        f"## ssd_keras benchmarks — {m['date']}",
        "",
        f"- command: `{args_line}` ({elapsed_s / 60:.1f} min)",
        f"- device: {m['device']}; CPU: {m['cpu']}, {m['cores']} cores"
        + (f" @ {m['cpu_mhz']:.0f} MHz" if m.get("cpu_mhz") else "")
        + f"; vector extensions: {', '.join(m.get('vector_extensions') or []) or 'none found'}"
        + ("" if any(v in (m.get("vector_extensions") or []) for v in ("AVX-512", "AVX512-VNNI", "AVX-VNNI", "AMX"))
           else " (no AVX-512 / VNNI / AMX: TensorFlow leaves oneDNN off by default)"),
        f"- TensorFlow {m['tensorflow']}, Keras {m['keras']}, torch {m.get('torch')}, numpy {m['numpy']}, "
        f"Python {m['python']}; TF threads intra/inter {m['tf_threads']['intra_op']}/{m['tf_threads']['inter_op']} "
        f"(0 = all cores), torch threads {m.get('torch_threads')}; TF oneDNN kernels "
        f"{'on' if m.get('tf_onednn') else 'off'} (TF_ENABLE_ONEDNN_OPTS={m.get('TF_ENABLE_ONEDNN_OPTS')})",
        f"- load average (1 min) at start / end: {_fmt(m.get('load_avg_start'))} / {_fmt(m.get('load_avg_end'))}"
        " (other processes on the machine; > cores means the numbers are noisy); at the start of each benchmark: "
        + ", ".join(f"{k} {_fmt(v)}" for k, v in (m.get("load_avg_per_bench") or {}).items()),
        "",
        "",
    ]
    return "\n".join(head) + markdown_table(rows) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true", help="longer runs (each benchmark's --full)")
    p.add_argument("--mixed-precision", action="store_true", help="add mixed-precision cases")
    p.add_argument("--only", help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    p.add_argument("--batch-size", type=int, help="batch size of train_step and inference")
    p.add_argument("--train-cases", help="train_step cases (comma-separated; see bench/train_step.py --help)")
    p.add_argument("--same-process", action="store_true",
                   help="train_step: all cases in one process instead of one child process each")
    p.add_argument("--out", default=os.path.join(HERE, "results"), help="results folder")
    p.add_argument("--no-save", action="store_true", help="print only")
    args = p.parse_args(argv)
    names = args.only.split(",") if args.only else list(BENCHMARKS)
    bad = [n for n in names if n not in BENCHMARKS]
    if bad:
        p.error(f"--only: unknown benchmark(s) {bad}; choose from {','.join(BENCHMARKS)}")
    names = [n for n in BENCHMARKS if n in names]  # fixed order: pipeline ratios need train_step
    quick = not args.full

    import peak

    t_start = time.perf_counter()
    machine = peak.machine_info()
    machine["load_avg_start"] = machine.pop("load_avg_1m")
    machine["command"] = " ".join(["python", os.path.relpath(__file__)] + (sys.argv[1:] if argv is None else list(argv)))
    gpu = machine["device"] != "cpu"
    all_rows, raw, peak_gflops = [], {}, None
    for name in names:
        t0 = time.perf_counter()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        machine.setdefault("load_avg_per_bench", {})[name] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        try:
            module = importlib.import_module(name)
            if name == "memory":
                module = _MemoryBench(module)
            kwargs = {"use_gpu": gpu, "mixed_precision": args.mixed_precision, "batch_size": args.batch_size,
                      "peak_gflops": peak_gflops, "isolate": not args.same_process,
                      "only": args.train_cases.split(",") if (name == "train_step" and args.train_cases) else None}
            if name == "pipeline":
                kwargs.pop("batch_size")  # its batch size is the data set's (32), not the model's
            rows = _call_run(module, quick, **kwargs)
        except Exception as e:  # noqa: BLE001 - a missing or broken benchmark must not lose the others
            traceback.print_exc()
            rows = [{"bench": name, "case": "(failed)", "value": None, "error": f"{type(e).__name__}: {e}"[:300]}]
        raw[name] = rows
        rows = normalise(name, rows, best_train_ips(all_rows))
        if name == "peak" and rows and rows[0].get("value"):
            peak_gflops = peak.measured_peak(rows)
        all_rows += rows
        print(f"[bench] {name} done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - t_start
    machine["load_avg_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    report = markdown_report(all_rows, machine, machine["command"], elapsed)
    print(report)
    if not args.no_save:
        os.makedirs(args.out, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M", time.gmtime())
        dev = "cpu" if not gpu else machine["device"].replace(" ", "_")
        base = os.path.join(args.out, f"{stamp}-{dev}")
        with open(base + ".json", "w") as f:
            json.dump({"machine": machine, "rows": all_rows, "raw": raw, "elapsed_s": elapsed}, f, indent=1, default=str)
        with open(base + ".md", "w") as f:
            f.write(report)
        with open(os.path.join(args.out, "latest.md"), "w") as f:
            f.write(report)
        print(f"[bench] wrote {base}.json, {base}.md, {os.path.join(args.out, 'latest.md')}", file=sys.stderr)
    return all_rows


if __name__ == "__main__":
    main()
