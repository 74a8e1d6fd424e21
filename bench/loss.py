"""SSDLoss forward + backward per batch, next to the lesson's per-image PyTorch loop.

Batch 64, the lesson's final anchors (4x4, 2x2, 1x1 grids, k = 9: 189 anchors), 20 classes,
VOC-like targets: 1–20 objects per image drawn from a geometric distribution with mean 2.5
(VOC 2007 trainval has 2.5 objects per image, median 2), padded to 20 rows. Timed, on the
same CPU in the same process:

* the lesson: `ssd_loss` from `ssd_keras.reference.lesson` (its Python loop over images, torch
  2.13 eager) + `backward()` to the model output;
* `SSDLoss` (with its `y_true` checks on, as users run it): eager, `tf.function`, and
  `tf.function(jit_compile=True)` (XLA), each computing the loss and its gradient w.r.t.
  `y_pred` with a `GradientTape`.

Each row gives the median and the best wall time over timed repeats after warm-up (tracing /
XLA compilation), and the median process CPU time; `ms_per_batch` / `speedup` are the
medians. The values are checked against each other (relative difference printed), so the
timings compare the same computation.

    python bench/loss.py                 # quick: BCE, a few seconds
    python bench/loss.py --full          # BCE and focal, more repeats
    python bench/loss.py --json out/loss.json
    python bench/loss.py --profile       # the pieces (matching, each term) and the floor, timed
    taskset -c 0 python bench/loss.py --compare 8c29369 --rounds 400   # now against a commit
    taskset -c 0 python bench/loss.py --trace /tmp/loss-trace   # time per TF op (tf.profiler)

`run(quick=True) -> list[dict]` gives the rows to `bench/run.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402

BATCH, NUM_CLASSES, MAX_BOXES = 64, 20, 20


def voc_like_batch(seed=0, batch=BATCH, num_classes=NUM_CLASSES, max_boxes=MAX_BOXES, num_anchors=189):
    """(y_true [B, max_boxes, 5] with -1 padding, y_pred [B, A, 4 + C + 1], counts [B])."""
    rng = np.random.default_rng(seed)
    counts = np.clip(rng.geometric(0.4, batch), 1, max_boxes)
    y_true = np.zeros((batch, max_boxes, 5), np.float32)
    y_true[..., 4] = -1
    for b, n in enumerate(counts):
        hw = rng.uniform(0.05, 0.9, (n, 2))
        tl = rng.uniform(0, 1, (n, 2)) * (1 - hw)
        y_true[b, :n, :4] = np.concatenate([tl, tl + hw], 1)
        y_true[b, :n, 4] = rng.integers(0, num_classes, n)
    y_pred = rng.normal(size=(batch, num_anchors, 4 + num_classes + 1)).astype(np.float32)
    y_pred[..., 4:] -= 3.0  # logits near the head's initial bias, as at the start of training
    return y_true, y_pred, counts


def _time(fn, warmup, repeats):
    """Best and median wall ms per call, and median process-CPU ms (all threads together).

    The best (minimum) time is what the machine can do, as `timeit` reports; medians and
    CPU time show how much other processes got in the way on a shared machine.
    """
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    median = 1000 * float(np.median(wall))
    return dict(ms_per_batch=median, ms_median=median, ms_best=1000 * min(wall),
                cpu_ms_median=1000 * float(np.median(cpu)))


def run(quick=True, focal=None, seed=0, use_gpu=False, torch_threads=1, tf_threads=None):
    """Time the loss; returns one dict per implementation (and per loss kind).

    `focal=None` times BCE (and, unless `quick`, the lesson's focal loss too); pass
    `focal=False` / `True` to pick one. `use_gpu=False` hides GPUs from TensorFlow so both
    frameworks run on the same CPU. `torch_threads=1` is the lesson loop's best case: its
    ops are tiny, and with more threads torch's thread pool costs more than it gives (on a
    busy 2-core machine, 2 threads were 20x slower); `None` keeps torch's default.
    `tf_threads=1` makes TensorFlow single-threaded too (for a like-for-like CPU-time
    comparison; it must be set before TensorFlow runs anything in the process).
    """
    import tensorflow as tf

    if tf_threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(tf_threads)
            tf.config.threading.set_inter_op_parallelism_threads(tf_threads)
        except RuntimeError:  # TensorFlow already initialised by the caller
            pass
    if not use_gpu:
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:  # devices already initialised by the caller; keep them
            pass
    import torch

    if torch_threads:
        torch.set_num_threads(torch_threads)
    from ssd_keras import AnchorConfig, SSDLoss
    from ssd_keras.reference import lesson as lt

    kinds = [False] if (quick and focal is None) else ([False, True] if focal is None else [bool(focal)])
    # Quick: 40 interleaved rounds (~25 s); with 10 the medians of near implementations swapped order.
    warmup, reps_tf = (3, 40) if quick else (5, 100)
    anchors = AnchorConfig()
    y_true, y_pred, counts = voc_like_batch(seed, num_anchors=anchors.num_anchors)
    lesson_anchors = lt.make_anchors()
    targ = lt.targets_from_y_true(y_true)
    device = tf.config.list_logical_devices("GPU")[0].name if (use_gpu and tf.config.list_logical_devices("GPU")) else "CPU"
    common = dict(
        bench="loss", batch=BATCH, anchors=anchors.num_anchors, classes=NUM_CLASSES,
        objects_median=float(np.median(counts)), objects_mean=float(np.mean(counts)),
        objects_max=int(counts.max()), tf_device=device, torch_threads=torch.get_num_threads(),
        tf_threads=tf.config.threading.get_intra_op_parallelism_threads() or "default",
        cpu=platform.processor() or platform.machine(), cpu_count=os.cpu_count(),
        cpus_usable=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        load_average=os.getloadavg()[0],
    )
    rows = []
    for use_focal in kinds:
        kind = "focal" if use_focal else "bce"
        loss_f = lt.FocalLoss(NUM_CLASSES) if use_focal else lt.BCE_Loss(NUM_CLASSES)

        def torch_step():
            leaf, pred = lt.pred_from_y_pred(y_pred, requires_grad=True)
            value = lt.ssd_loss(pred, targ, lesson_anchors, loss_f) / BATCH
            value.backward()
            return value.item(), leaf.grad

        ref_value = torch_step()[0]
        focal_arg = (0.25, 1.0) if use_focal else None
        loss = SSDLoss(anchors, NUM_CLASSES, focal=focal_arg)
        yt, yp = tf.constant(y_true), tf.constant(y_pred)

        step = make_step(loss)
        variants = [
            ("SSDLoss eager", step),
            ("SSDLoss tf.function", tf.function(step)),
            ("SSDLoss XLA (jit_compile=True)", tf.function(step, jit_compile=True)),
        ]
        for label, commit in BEFORE_COMMITS:
            before = _loss_before(commit)
            if before is not None:
                variants.append((f"SSDLoss {label} ({commit}), tf.function",
                                 tf.function(make_step(before.SSDLoss(anchors, NUM_CLASSES, focal=focal_arg)))))
        values = {name: float(fn(yt, yp)[0]) for name, fn in variants}
        timed = {"lesson": lambda: torch_step()}
        for name, fn in variants:
            # .numpy() on the gradient: wait for the result (matters on GPU).
            timed[name] = lambda fn=fn: fn(yt, yp)[1].numpy()
        # Interleaved rounds (lesson, eager, function, XLA, before, lesson, ...): a change in
        # machine load hits every implementation alike.
        t = _time_interleaved(timed, warmup, reps_tf)
        ref = t.pop("lesson")
        rows.append(dict(common, name="lesson ssd_loss, PyTorch per-image loop", loss=kind,
                         framework=f"torch {torch.__version__} eager", **ref, speedup=1.0,
                         speedup_best=1.0, cpu_speedup=1.0, rel_diff=0.0, repeats=reps_tf))
        for name, tt in t.items():
            rows.append(dict(common, name=name, loss=kind, framework=f"tensorflow {tf.__version__}",
                             **tt, speedup=ref["ms_median"] / tt["ms_median"],
                             speedup_best=ref["ms_best"] / tt["ms_best"],
                             cpu_speedup=ref["cpu_ms_median"] / tt["cpu_ms_median"],
                             rel_diff=abs(values[name] - ref_value) / abs(ref_value), repeats=reps_tf))
        common["load_average_end"] = os.getloadavg()[0]
    return rows


def make_step(loss):
    """`step(y_true, y_pred) -> (loss value, its gradient w.r.t. y_pred)`, as `fit` needs them."""
    import tensorflow as tf

    def step(yt, yp):
        with tf.GradientTape() as tape:
            tape.watch(yp)
            value = loss(yt, yp)
        return value, tape.gradient(value, yp)
    return step


#: Earlier states of the loss, timed beside the current one: (label, commit).
BEFORE_COMMITS = (
    ("before issue 13", "e03d683"),
    ("2026-12-01 evening", "733a439"),  # before the affine box decoding and the row trim
    ("2026-12-02 morning", "b4065c2"),  # before matching on the object list
    ("2026-12-02 noon", "8c29369"),  # before the hand-written classification gradient
)
#: The modules that make up the loss (each imports the ones before it); anchors.py is shared.
_LOSS_MODULES = ("boxes", "matching", "losses")


def _loss_before(commit):
    """`ssd_keras`'s boxes, matching and losses modules as they were at `commit`, read from git
    history (no copy kept in the tree) into a package `ssd_keras_<commit>` beside the current
    one; returns its losses module, or None where the history is not there."""
    import subprocess
    import types

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    package = f"ssd_keras_{commit}"
    if f"{package}.losses" in sys.modules:
        return sys.modules[f"{package}.losses"]
    sys.modules.setdefault(package, types.ModuleType(package))
    for name in _LOSS_MODULES:
        try:
            source = subprocess.run(["git", "-C", root, "show", f"{commit}:ssd_keras/{name}.py"],
                                    capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return None
        for other in _LOSS_MODULES:
            source = source.replace(f"from ssd_keras.{other} import", f"from {package}.{other} import")
        # Unregistered, so that it can live next to the current (registered) classes.
        source = source.replace('@keras.saving.register_keras_serializable(package="ssd_keras")\n', "")
        module = types.ModuleType(f"{package}.{name}")
        sys.modules[module.__name__] = module
        exec(compile(source, f"{commit}:ssd_keras/{name}.py", "exec"), module.__dict__)
    return sys.modules[f"{package}.losses"]


def _time_interleaved(fns, warmup, rounds):
    """`_time`'s numbers for each of `fns` ({name: fn}), timed in interleaved rounds."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    wall = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    names = list(fns)
    for r in range(rounds):
        # Each round starts one further down the list: the first call after a PyTorch one pays
        # for waking TensorFlow's threads (~0.8 ms here), which would otherwise always land on
        # the same implementation.
        for k in names[r % len(names):] + names[:r % len(names)]:
            fn = fns[k]
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            wall[k].append(time.perf_counter() - start)
            cpu[k].append(time.process_time() - start_cpu)
    return {k: dict(ms_per_batch=1000 * float(np.median(wall[k])), ms_median=1000 * float(np.median(wall[k])),
                    ms_best=1000 * min(wall[k]), cpu_ms_median=1000 * float(np.median(cpu[k])))
            for k in fns}


def profile(rounds=30, seed=0):
    """Where the loss's time goes: its pieces under `tf.function` (the matching, each term given
    the matching), timed interleaved (ms, median and best), next to the floors over the same
    64 × 189 × 25 `y_pred` (a call with one pass each way, softplus fwd+bwd, exp) and the
    lesson loop. Returns {piece: (median ms, best ms)}."""
    import tensorflow as tf
    import torch

    torch.set_num_threads(1)
    from ssd_keras import AnchorConfig, SSDLoss
    from ssd_keras.boxes import activations_to_boxes
    from ssd_keras.losses import classification_loss
    from ssd_keras.matching import match_anchors
    from ssd_keras.reference import lesson as lt

    anchors, c = AnchorConfig(), NUM_CLASSES
    y_true, y_pred, _ = voc_like_batch(seed, num_anchors=anchors.num_anchors)
    yt, yp = tf.constant(y_true), tf.constant(y_pred)

    def grad_of(f):
        # The value too, as `fit` needs it: with the gradient alone, TensorFlow prunes the
        # forward ops that only the value uses (the softplus itself), and times less than `fit` runs.
        def step(yt, yp):
            with tf.GradientTape() as tape:
                tape.watch(yp)
                v = tf.reduce_sum(f(yt, yp))
            return v, tape.gradient(v, yp)
        return tf.function(step)

    m = match_anchors(yt, anchors, c, 0.4)
    classes = m["classes"]
    pieces = {
        "SSDLoss fwd+bwd (validate on)": grad_of(SSDLoss(anchors, c)),
        "SSDLoss fwd+bwd (validate off)": grad_of(SSDLoss(anchors, c, validate=False)),
        **{f"{label} ({commit}) fwd+bwd (validate on)":
           grad_of(before.SSDLoss(anchors, c)) if (before := _loss_before(commit)) else None
           for label, commit in BEFORE_COMMITS},
        "matching only (fwd; no gradient)": tf.function(lambda yt, yp: match_anchors(yt, anchors, c, 0.4)["classes"]),
        "classification term fwd+bwd (given the matching)": grad_of(
            lambda yt, yp: classification_loss(tf.split(yp, [4, c, 1], -1)[1], classes, c)),
        "the same with TF's Softplus kernel and autodiff (8c29369's form)": grad_of(
            lambda yt, yp: tf.nn.softplus(tf.split(yp, [4, c, 1], -1)[1]
                                          * tf.one_hot(classes, c, on_value=-1.0, off_value=1.0))),
        "location term fwd+bwd (given the matching)": grad_of(
            lambda yt, yp: tf.where(m["positive"][..., None], tf.abs(
                activations_to_boxes(tf.split(yp, [4, c + 1], -1)[0], anchors) - m["boxes"]), 0.0)),
        "floor: reduce_sum fwd+bwd over y_pred (call, one pass each way)": grad_of(lambda yt, yp: yp),
        "floor: softplus fwd+bwd over y_pred": grad_of(lambda yt, yp: tf.nn.softplus(yp)),
        "floor: exp fwd over y_pred": tf.function(lambda yt, yp: tf.exp(yp)),
        "floor: log(sigmoid) fwd over y_pred": tf.function(lambda yt, yp: tf.math.log(tf.sigmoid(yp))),
    }
    pieces = {k: v for k, v in pieces.items() if v is not None}
    targ, lesson_anchors, loss_f = lt.targets_from_y_true(y_true), lt.make_anchors(), lt.BCE_Loss(c)

    def torch_step():
        leaf, pred = lt.pred_from_y_pred(y_pred, requires_grad=True)
        (lt.ssd_loss(pred, targ, lesson_anchors, loss_f) / BATCH).backward()

    x = torch.tensor(y_pred, requires_grad=True)

    def torch_softplus():
        torch.nn.functional.softplus(x).sum().backward()

    fns = {k: (lambda f=f: [np.asarray(t) for t in tf.nest.flatten(f(yt, yp))]) for k, f in pieces.items()}
    fns["lesson loop fwd+bwd (torch, 1 thread)"] = torch_step
    fns["torch softplus fwd+bwd over y_pred (1 thread)"] = torch_softplus
    t = _time_interleaved(fns, 2, rounds)
    return {k: (v["ms_median"], v["ms_best"]) for k, v in t.items()}


def trace(logdir, calls=50, seed=0, focal=False, top=25):
    """Op-level profile of `SSDLoss` fwd+bwd under `tf.function` (batch 64, checks on): `calls`
    calls traced with `tf.profiler` into `logdir`. Returns `(per op type, per op)`, each
    `[(key, ms per call, share)]`, from `train_step.trace_op_times`."""
    import tensorflow as tf

    from ssd_keras import AnchorConfig, SSDLoss
    from train_step import trace_op_times

    anchors = AnchorConfig()
    y_true, y_pred, _ = voc_like_batch(seed, num_anchors=anchors.num_anchors)
    yt, yp = tf.constant(y_true), tf.constant(y_pred)
    loss = SSDLoss(anchors, NUM_CLASSES, focal=(0.25, 1.0) if focal else None)

    step = tf.function(make_step(loss))
    for _ in range(5):
        step(yt, yp)[1].numpy()

    def run():
        for _ in range(calls):
            step(yt, yp)[1].numpy()

    out = []
    for by in ("type", "name"):
        rows = trace_op_times(run, os.path.join(logdir, by), top=top, by=by)
        out.append([(key, ms / calls, share) for key, ms, share in rows])
    return tuple(out)


def compare(commit, rounds=400, seed=0):
    """`SSDLoss` now against `SSDLoss` at `commit` (read from git history), BCE and focal, value
    and gradient under `tf.function` as `fit` runs them, in `rounds` interleaved rounds in one
    process (each round starts one further down the list). Returns {name: (median ms, best ms)}."""
    import tensorflow as tf

    from ssd_keras import AnchorConfig, SSDLoss

    before = _loss_before(commit)
    if before is None:
        raise SystemExit(f"--compare: cannot read the loss at {commit} from git history")
    anchors = AnchorConfig()
    y_true, y_pred, _ = voc_like_batch(seed, num_anchors=anchors.num_anchors)
    yt, yp = tf.constant(y_true), tf.constant(y_pred)
    fns = {}
    for focal in (None, (0.25, 1.0)):
        kind = "focal" if focal else "bce"
        for label, cls in (("now", SSDLoss), (commit, before.SSDLoss)):
            step = tf.function(make_step(cls(anchors, NUM_CLASSES, focal=focal)))
            fns[f"{kind}, {label}"] = lambda step=step: [t.numpy() for t in step(yt, yp)]
    t = _time_interleaved(fns, 10, rounds)
    return {k: (v["ms_median"], v["ms_best"]) for k, v in t.items()}


def markdown(rows):
    """The rows as a Markdown table."""
    lines = [
        "| loss | implementation | ms / batch (median) | speed-up | ms (best) | speed-up (best) "
        "| CPU ms (median) | CPU speed-up | rel. diff of value |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['loss']} | {r['name']} | {r['ms_median']:.2f} | {r['speedup']:.1f}× | "
            f"{r['ms_best']:.2f} | {r['speedup_best']:.1f}× | {r['cpu_ms_median']:.2f} | "
            f"{r['cpu_speedup']:.1f}× | {r['rel_diff']:.1e} |"
        )
    r = rows[0]
    lines.append("")
    lines.append(
        f"batch {r['batch']}, {r['anchors']} anchors, {r['classes']} classes, objects per image "
        f"median {r['objects_median']:g} / mean {r['objects_mean']:.2f} / max {r['objects_max']}; "
        f"TF device {r['tf_device']}, TF threads {r['tf_threads']}, torch threads {r['torch_threads']}, "
        f"{r['cpu_count']} CPUs ({r['cpus_usable']} usable by this process), "
        f"load average before the run {r['load_average']:.1f}. Speed-ups are against the lesson's "
        "loop. Best = minimum over repeats (timeit's convention); CPU ms counts all threads of "
        "the process; on a busy machine median wall times mostly measure the other processes."
    )
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--full", action="store_true", help="BCE and focal, more repeats")
    p.add_argument("--focal", action="store_true", help="time only the focal loss")
    p.add_argument("--gpu", action="store_true", help="let TensorFlow use a GPU (torch stays on CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tf-threads", type=int, default=0,
                   help="TensorFlow intra/inter-op threads (default 0 = TensorFlow's default)")
    p.add_argument("--torch-threads", type=int, default=1,
                   help="threads for the lesson's loop (default 1, its fastest; 0 = torch's default)")
    p.add_argument("--json", help="write the rows to this file")
    p.add_argument("--profile", action="store_true",
                   help="instead: time the loss's pieces and the element-wise floor, interleaved")
    p.add_argument("--compare", metavar="COMMIT",
                   help="instead: SSDLoss now against SSDLoss at COMMIT, interleaved (see --rounds)")
    p.add_argument("--rounds", type=int, default=400, help="rounds for --compare (default 400)")
    p.add_argument("--trace", metavar="DIR",
                   help="instead: tf.profiler trace of 50 calls into DIR; time per op type and per op")
    args = p.parse_args(argv)
    if args.trace:
        by_type, by_name = trace(args.trace, seed=args.seed, focal=args.focal)
        for title, rows in (("op type", by_type), ("op", by_name)):
            print(f"| {title} (SSDLoss fwd+bwd, {'focal' if args.focal else 'BCE'}) | ms per call | share |")
            print("|---|---:|---:|")
            for key, ms, share in rows:
                print(f"| `{key[-90:]}` | {ms:.3f} | {100 * share:.1f} % |")
            print()
        return by_type, by_name
    if args.compare:
        load = os.getloadavg()[0]
        res = compare(args.compare, rounds=args.rounds, seed=args.seed)
        print(f"| SSDLoss fwd+bwd, batch 64, {args.rounds} interleaved rounds | ms median | ms best |\n|---|---:|---:|")
        for k, (med, best) in res.items():
            print(f"| {k} | {med:.3f} | {best:.3f} |")
        for kind in ("bce", "focal"):
            now, then = res[f"{kind}, now"], res[f"{kind}, {args.compare}"]
            print(f"\n{kind}: {then[0] / now[0]:.2f}x faster than {args.compare} by the median, "
                  f"{then[1] / now[1]:.2f}x by the best", end="")
        print(f"\n\nload average (1 min) before / after: {load:.1f} / {os.getloadavg()[0]:.1f}")
        return res
    if args.profile:
        load = os.getloadavg()[0]
        res = profile()
        print("| piece (batch 64, 189 anchors, 20 classes) | ms median | ms best |\n|---|---:|---:|")
        for k, (med, best) in res.items():
            print(f"| {k} | {med:.2f} | {best:.2f} |")
        print(f"\nload average (1 min) before / after: {load:.1f} / {os.getloadavg()[0]:.1f}")
        return res
    rows = run(quick=not args.full, focal=True if args.focal else None, seed=args.seed, use_gpu=args.gpu,
               torch_threads=args.torch_threads or None, tf_threads=args.tf_threads or None)
    print(markdown(rows))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
