"""The machine's measured fp32 matmul peak (TensorFlow and PyTorch), and a description of the machine.

The training-step benchmark reports achieved GFLOP/s as a fraction of this number: a large
square `tf.matmul` / `torch.mm` is the best case for the BLAS / oneDNN kernels both frameworks
use, so it is the practical ceiling for a convolution network on the same device.

    python bench/peak.py            # n = 2048, a few seconds
    python bench/peak.py --full     # n = 4096, more repeats
    python bench/peak.py --json out.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _cpu_mhz() -> float | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return float(line.split(":", 1)[1])
    except (OSError, ValueError):
        pass
    return None


#: /proc/cpuinfo flags that decide TensorFlow's and PyTorch's CPU kernels (oneDNN's ISA, bf16).
VECTOR_FLAGS = {"avx2": "AVX2", "fma": "FMA", "avx512f": "AVX-512", "avx512_vnni": "AVX512-VNNI",
                "avx_vnni": "AVX-VNNI", "avx512_bf16": "AVX512-BF16", "amx_tile": "AMX"}


def vector_extensions() -> list[str]:
    """The CPU's vector extensions among `VECTOR_FLAGS`, e.g. ['AVX2', 'FMA']."""
    flags = _cpu_flags()
    return [name for flag, name in VECTOR_FLAGS.items() if flag in flags]


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def theoretical_fp32_peak_gflops() -> float | None:
    """Rough fp32 FMA peak from /proc/cpuinfo: cores × GHz × FLOPs/cycle (2 FMA pipes assumed).

    Only a sanity bound for the measured number (turbo, SMT and AVX clocks make it approximate).
    """
    mhz, flags = _cpu_mhz(), _cpu_flags()
    if not mhz or "fma" not in flags:
        return None
    lanes = 16 if "avx512f" in flags else 8
    return usable_cores() * mhz / 1e3 * 2 * 2 * lanes


def device_name() -> str:
    """'cpu' or the first GPU's name as TensorFlow sees it."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "cpu"
    try:
        return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "gpu")
    except Exception:  # noqa: BLE001 - details are optional
        return "gpu"


def _tf_onednn():
    """Whether TensorFlow's oneDNN CPU kernels are on in this process (None if unknown)."""
    try:
        from tensorflow.python.util import _pywrap_util_port

        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return None


def machine_info() -> dict:
    """Everything needed to read a benchmark number later: date, CPU, cores, versions, device."""
    import keras
    import numpy as np
    import tensorflow as tf

    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cpu_mhz": _cpu_mhz(),
        "cores": usable_cores(),
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "device": device_name(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "tf_threads": {
            "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        },
        "vector_extensions": vector_extensions(),
        "tf_onednn": _tf_onednn(),
        "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["torch_device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except ImportError:
        info["torch"] = None
    return info


def _best_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: kernel selection, allocation
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def tf_matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    import tensorflow as tf

    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    mm = tf.function(lambda: tf.matmul(a, b))

    def step():
        mm().numpy()  # .numpy() waits for the result (GPU is asynchronous)

    return 2 * n**3 / _best_seconds(step, repeats) / 1e9


def torch_mm_gflops(n: int = 2048, repeats: int = 5) -> float | None:
    try:
        import torch
    except ImportError:
        return None
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    a = torch.randn(n, n, device=dev)
    b = torch.randn(n, n, device=dev)

    def step():
        torch.mm(a, b)
        if dev == "cuda":
            torch.cuda.synchronize()

    return 2 * n**3 / _best_seconds(step, repeats) / 1e9


def numpy_matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """numpy's BLAS (OpenBLAS in the wheels): a third opinion, independent of MKL / oneDNN."""
    import numpy as np

    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    return 2 * n**3 / _best_seconds(lambda: a @ a, repeats) / 1e9


def run(quick: bool = True, n: int | None = None) -> list[dict]:
    """Rows: TF, torch and numpy fp32 matmul GFLOP/s (best of repeats), the theoretical bound.

    The reference for "fraction of peak" is the best of the measured matmuls (`measured_peak`).
    """
    n = n or (2048 if quick else 4096)
    repeats = 5 if quick else 10
    tf_g = tf_matmul_gflops(n, repeats)
    rows = [
        {"bench": "peak", "case": f"tf.matmul fp32 {n}²", "value": tf_g, "unit": "GFLOP/s",
         "device": device_name()},
    ]
    th_g = torch_mm_gflops(n, repeats)
    if th_g is not None:
        rows.append({"bench": "peak", "case": f"torch.mm fp32 {n}²", "value": th_g, "unit": "GFLOP/s",
                     "ratio": th_g / tf_g, "ratio_to": "tf.matmul"})
    if device_name() == "cpu":
        np_g = numpy_matmul_gflops(n, repeats)
        rows.append({"bench": "peak", "case": f"numpy matmul fp32 {n}²", "value": np_g, "unit": "GFLOP/s",
                     "ratio": np_g / tf_g, "ratio_to": "tf.matmul"})
    theo = theoretical_fp32_peak_gflops()
    if theo and device_name() == "cpu":
        rows.append({"bench": "peak", "case": "theoretical fp32 FMA (cpuinfo)", "value": theo,
                     "unit": "GFLOP/s", "ratio": tf_g / theo, "ratio_to": "tf.matmul / this",
                     "notes": f"{usable_cores()} cores × {_cpu_mhz():.0f} MHz × 2 FMA × 2 × SIMD lanes"})
    return rows


def measured_peak(rows: list[dict]) -> float:
    """The reference peak for 'fraction of peak': the best measured matmul (TF or torch)."""
    return max(r["value"] for r in rows if r["bench"] == "peak" and r["case"].startswith(("tf.", "torch.", "numpy")))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true", help="n=4096 and more repeats")
    p.add_argument("--n", type=int, default=None, help="matrix size")
    p.add_argument("--json", help="write rows and machine info to this file")
    args = p.parse_args(argv)
    rows = run(quick=not args.full, n=args.n)
    for r in rows:
        print(f"{r['case']:<34} {r['value']:8.1f} {r['unit']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine_info(), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
