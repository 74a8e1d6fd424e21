"""Inference: `predict` throughput, decode + NMS as a share of it, batch-1 latency; vs PyTorch.

Same model as `bench/train_step.py` (ResNet34 body at 224, `SSDMultiHead`, k = 9, 20 classes,
random weights — speed does not depend on them, except for NMS, see below).

* `keras predict`: `model.predict(images, batch_size=B)` img/s (Keras' default: no XLA on
  CPU), and the same model compiled with `jit_compile=True`.
* `decode + NMS`: `decode_detections` (activations → boxes, sigmoid, per-class
  `tf.image.combined_non_max_suppression`) under `tf.function`, per batch of `B`. With random
  weights the head's -4 bias puts almost every score under the 0.05 threshold, which would
  make NMS look free; the timed input is therefore a *busy* `y_pred`: logits ~ N(-3, 1), so
  about half of the 189 × 20 (anchor, class) pairs pass the threshold — more than a trained
  model gives. Its share = decode / (predict + decode) per batch (target ≤ 5 %).
* `batch-1 latency`: median ms of `model(x, training=False)` under `tf.function` (how a
  server or a notebook loop calls it; `predict` adds ~ms of per-call overhead, also shown),
  and of the full detector (`ssd_keras.inference.detection_function`: model + in-graph NMS).
* PyTorch 2.13: `LessonSSD` in `eval()` under `torch.no_grad()`, same batch, and batch-1.

    python bench/inference.py            # quick: batch 16, 32 images, 2 rounds
    python bench/inference.py --full     # batch 32, 128 images, 3 rounds
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from train_step import IMAGE_SIZE, NUM_CLASSES, mixed_policy_name  # noqa: E402


def _median_ms(fn, repeats, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def busy_y_pred(batch_size, num_anchors, num_classes=NUM_CLASSES, seed=0):
    """`[B, A, 4 + C + 1]` with box activations ~ N(0, 1) and logits ~ N(-3, 1) (see module doc)."""
    rng = np.random.default_rng(seed)
    y = rng.normal(size=(batch_size, num_anchors, 4 + num_classes + 1)).astype(np.float32)
    y[..., 4:] -= 3.0
    return y


def run(quick=True, batch_size=None, images=None, rounds=None, mixed_precision=False, torch_baseline=True):
    """Rows: predict img/s (Keras, Keras XLA, torch), decode share, batch-1 latencies."""
    import keras
    import tensorflow as tf

    from ssd_keras import AnchorConfig
    from ssd_keras.decode import decode_detections
    from ssd_keras.inference import detection_function
    from ssd_keras.model import build_ssd

    batch_size = batch_size or (16 if quick else 32)
    n_images = images or (2 * batch_size if quick else 4 * batch_size)
    rounds = rounds or (2 if quick else 3)
    reps_latency = 5 if quick else 20
    anchors = AnchorConfig()
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (n_images, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
    x1 = x[:1]
    rows = []

    def row(case, value, unit, **kw):
        r = {"bench": "inference", "case": case, "value": value, "unit": unit, "batch_size": batch_size, **kw}
        rows.append(r)
        print(f"  inference {case}: {value:.3f} {unit}", file=sys.stderr, flush=True)
        return r

    # --- Keras predict (graph, then XLA; optionally mixed precision) ----------------------
    variants = [("keras predict", False, False), ("keras predict XLA", True, False)]
    if mixed_precision:
        variants.append((f"keras predict {mixed_policy_name()}", False, True))
    models, samples = {}, {}
    for name, jit, mp in variants:
        old = keras.mixed_precision.global_policy()
        if mp:
            keras.mixed_precision.set_global_policy(mixed_policy_name())
        try:
            keras.utils.set_random_seed(0)
            m = build_ssd(NUM_CLASSES, anchors, backbone="resnet34", weights=None, image_size=IMAGE_SIZE)
        finally:
            keras.mixed_precision.set_global_policy(old)
        m.compile(jit_compile=jit)
        m.predict(x[:batch_size], batch_size=batch_size, verbose=0)  # trace / compile
        models[name], samples[name] = m, []
    torch_model = None
    if torch_baseline:
        try:
            import torch

            from ssd_keras.reference import lesson_model as LM

            torch.manual_seed(0)
            dev = "cuda" if torch.cuda.is_available() else "cpu"
            torch_model = LM.LessonSSD(NUM_CLASSES, 9, True).to(dev).eval()
            tx = LM.normalize_images(x).to(dev)

            def torch_predict(xs):
                with torch.no_grad():
                    for i in range(0, len(xs), batch_size):
                        out = torch_model(xs[i : i + batch_size])
                    out[0].cpu()

            torch_predict(tx[:batch_size])
            samples["torch eval (no_grad)"] = []
        except ImportError:
            torch_model = None
    # Interleaved rounds, median: machine load hits every case alike.
    for _ in range(rounds):
        for name, m in models.items():
            t0 = time.perf_counter()
            m.predict(x, batch_size=batch_size, verbose=0)
            samples[name].append(n_images / (time.perf_counter() - t0))
        if torch_model is not None:
            t0 = time.perf_counter()
            torch_predict(tx)
            samples["torch eval (no_grad)"].append(n_images / (time.perf_counter() - t0))
    base = float(np.median(samples["torch eval (no_grad)"])) if torch_model is not None else None
    for name, s in samples.items():
        v = float(np.median(s))
        kw = {"samples": [round(a, 3) for a in s], "images": n_images}
        if base:
            kw.update(ratio=v / base, ratio_to="torch eval")
        row(name, v, "img/s", **kw)
    predict_ips = float(np.median(samples["keras predict"]))

    # --- decode + NMS share ---------------------------------------------------------------
    decode = tf.function(lambda y: decode_detections(y, anchors))
    busy = tf.constant(busy_y_pred(batch_size, anchors.num_anchors))
    real = tf.constant(models["keras predict"].predict(x[:batch_size], batch_size=batch_size, verbose=0))
    dec_ms = _median_ms(lambda: decode(busy)["num_detections"].numpy(), 3 * rounds)
    dec_real_ms = _median_ms(lambda: decode(real)["num_detections"].numpy(), 3 * rounds)
    batch_ms = 1000 * batch_size / predict_ips
    share = dec_ms / (batch_ms + dec_ms)
    candidates = int(np.sum(1 / (1 + np.exp(-busy.numpy()[..., 4 : 4 + NUM_CLASSES])) > 0.05))
    row("decode + NMS (busy y_pred)", dec_ms, "ms/batch", ratio=share, ratio_to="share of predict + decode",
        target="≤ 5 %", met=share <= 0.05,
        notes=f"{candidates / batch_size:.0f} (anchor, class) candidates/image above 0.05; "
              f"untrained model's own output: {dec_real_ms:.1f} ms/batch")

    # --- batch-1 latency ------------------------------------------------------------------
    m = models["keras predict"]
    call = tf.function(lambda t: m(t, training=False))
    t1 = tf.constant(x1)
    lat = _median_ms(lambda: call(t1).numpy(), reps_latency, warmup=2)
    lat_predict = _median_ms(lambda: m.predict(x1, verbose=0), reps_latency, warmup=1)
    det_call = detection_function(m, anchors)
    lat_det = _median_ms(lambda: det_call(t1)["num_detections"].numpy(), reps_latency, warmup=2)
    torch_lat = None
    if torch_model is not None:
        def torch_one():
            with torch.no_grad():
                torch_model(tx[:1])[0].cpu()

        torch_lat = _median_ms(torch_one, reps_latency, warmup=2)
    kw = {"ratio": torch_lat / lat, "ratio_to": "torch latency / this"} if torch_lat else {}
    row("batch-1 latency, model (tf.function)", lat, "ms", batch_size=1, **kw)
    row("batch-1 latency, model.predict", lat_predict, "ms", batch_size=1)
    row("batch-1 latency, detector (model + NMS)", lat_det, "ms", batch_size=1)
    if torch_lat:
        row("batch-1 latency, torch eval", torch_lat, "ms", batch_size=1)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true", help="batch 32, 128 images, 3 rounds")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--images", type=int, help="images per predict round")
    p.add_argument("--rounds", type=int)
    p.add_argument("--mixed-precision", action="store_true")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch baseline")
    p.add_argument("--json")
    args = p.parse_args(argv)
    rows = run(not args.full, args.batch_size, args.images, args.rounds, args.mixed_precision, not args.no_torch)
    for r in rows:
        ratio = f"  ({r['ratio']:.2f} {r['ratio_to']})" if "ratio" in r else ""
        print(f"{r['case']:<42} {r['value']:9.2f} {r['unit']}{ratio}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
