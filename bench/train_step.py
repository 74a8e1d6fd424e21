"""Training-step throughput: Keras `fit` vs the same model in PyTorch, and as a fraction of peak.

The model is the lesson's final one: ResNet34 body at 224×224, `SSD_MultiHead` with k = 9
(189 anchors), 20 classes. Both sides train on the same synthetic batch (random 0–255 images,
VOC-like targets: 1–20 objects per image, median 2) with Adam:

* Keras: `build_ssd(...)` + `SSDLoss`, `model.fit` on a `tf.data` set that repeats one batch in
  memory (so the input pipeline is not measured — `bench/pipeline.py` does that), with and
  without XLA (`jit_compile`), with mixed precision (`--mixed-precision`), and on CPU with
  TensorFlow's other oneDNN setting (`keras-onednn` / `keras-eigen`: a child process with
  `TF_ENABLE_ONEDNN_OPTS=1` / `0`; TensorFlow turns oneDNN on by default only on CPUs with
  AVX512-VNNI/BF16 or AMX, see `onednn_enabled`).
* PyTorch 2.13: `LessonSSD` (`ssd_keras.reference.lesson_model`) + the lesson's `ssd_loss` with
  `BCE_Loss` (`ssd_keras.reference.lesson`, the per-image loop the lesson uses), eager NCHW, eager
  `channels_last`, and `torch.compile` of the model (the loss stays eager: its per-image Python
  loop with data-dependent shapes would only break the graph).

Throughput is images per second over the timed steps, after warm-up steps (tracing, XLA /
inductor compilation, allocator warm-up); the cases are timed in interleaved rounds and the
median round is reported, so that load from other processes hits all cases alike. Each case runs
in its own child process (`--same-process`: all in this one, where one framework's idle thread
pools slowed the other by up to 20 %). Achieved GFLOP/s = img/s × training FLOPs per image,
where training FLOPs = 3 × the forward convolution FLOPs (forward, input gradient, weight
gradient) counted from the conv shapes of the traced Keras graph; the fraction of peak divides
by the best measured fp32 matmul (`bench/peak.py`).

    python bench/train_step.py                    # quick: batch 16, 2 warm-up steps, 2 rounds × 2 steps
    python bench/train_step.py --full             # batch 32, 2 warm-up steps, 3 rounds × 5 steps
    python bench/train_step.py --mixed-precision  # add mixed_bfloat16 (CPU) / mixed_float16 (GPU)
    python bench/train_step.py --only keras-xla,torch-eager --batch-size 8 --steps 2
    python bench/train_step.py --same-process --only keras-fbn,torch-eager  # all cases in this process
    python bench/train_step.py --profile /tmp/prof --only keras   # time per TF op type
    python bench/train_step.py --freeze head --only keras-onednn-fbn,torch-eager  # the lesson's stage 1

By default every layer trains. The lesson never trains that way: its stage 1 trains the head
with the body frozen (`--freeze head`, fastai's `freeze_to(-1)`), its stage 2 the upper body
and the head (`--freeze upper`, `freeze_to(-2)`: ResNet34's layer3, layer4 and the head). Both
sides freeze the same layer groups (`ssd_keras.optimizers.freeze_to`; in PyTorch,
`requires_grad_(False)`), and both run frozen BatchNorm layers in inference mode (Keras does
for `trainable=False`, fastai 0.7's `set_train_mode` does for frozen layers). Frozen layers
need no gradients, so the step's FLOPs are not 3× forward: GFLOP/s and the fraction of peak are
left out there.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

NUM_CLASSES = 20
IMAGE_SIZE = 224
MAX_BOXES = 20

KERAS_CASES = ("keras", "keras-xla", "keras-onednn", "keras-eigen", "keras-mp", "keras-xla-mp",
               # the same with Keras 3's own (unfused) BatchNormalization in the bodies ("-kbn") or
               # with `ssd_keras.backbones.FusedBatchNorm` ("-fbn"); without either, the default
               # of `backbones.FUSED_BN` (env SSD_KERAS_FUSED_BN).
               "keras-kbn", "keras-xla-kbn", "keras-onednn-kbn", "keras-eigen-kbn",
               "keras-fbn", "keras-xla-fbn", "keras-onednn-fbn", "keras-eigen-fbn",
               # TensorFlow's inter-op pool at one thread (TF_NUM_INTEROP_THREADS=1): the
               # backward convolutions of a layer no longer run side by side on 2 cores
               "keras-onednn-fbn-inter1", "keras-eigen-fbn-inter1")
TORCH_CASES = ("torch-eager", "torch-channels-last", "torch-compile", "torch-mp")
#: `--freeze` → fastai's `freeze_to(n)` over the layer groups [early body, late body, head].
FREEZE = {"none": None, "head": -1, "upper": -2}
ALL_CASES = KERAS_CASES + TORCH_CASES


# --------------------------------------------------------------------------------------------
# Synthetic data shared by both frameworks
# --------------------------------------------------------------------------------------------


def synthetic_batch(batch_size, image_size=IMAGE_SIZE, num_classes=NUM_CLASSES, max_boxes=MAX_BOXES, seed=0):
    """Random 0–255 RGB images `[B, S, S, 3]` float32 and VOC-like `y_true [B, max_boxes, 5]`.

    Boxes are relative yxyx, 1 + Poisson(1.2) objects per image (median 2, as VOC 2007's 2.4
    mean), capped at `max_boxes`, the first image always full; padding rows have class -1.
    """
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (batch_size, image_size, image_size, 3)).astype(np.float32)
    y_true = np.zeros((batch_size, max_boxes, 5), np.float32)
    y_true[..., 4] = -1
    counts = np.minimum(1 + rng.poisson(1.2, batch_size), max_boxes)
    counts[0] = max_boxes
    for i, n in enumerate(counts):
        centre = rng.uniform(0.15, 0.85, (n, 2))
        size = rng.uniform(0.08, 0.7, (n, 2))
        lo = np.clip(centre - size / 2, 0, 1)
        hi = np.clip(centre + size / 2, 0, 1)
        y_true[i, :n, :2], y_true[i, :n, 2:4] = lo, hi
        y_true[i, :n, 4] = rng.integers(0, num_classes, n)
    return images, y_true


# --------------------------------------------------------------------------------------------
# FLOPs
# --------------------------------------------------------------------------------------------


def keras_conv_flops(model, image_size=IMAGE_SIZE) -> int:
    """Forward FLOPs per image (2 × multiply-adds) of every Conv2D / depthwise conv in `model`.

    Read from the shapes in the traced inference graph, so nested models and custom layers
    are included and nothing depends on layer naming.
    """
    import tensorflow as tf

    fn = tf.function(lambda x: model(x, training=False))
    graph = fn.get_concrete_function(tf.TensorSpec([1, image_size, image_size, 3], tf.float32)).graph
    total = 0
    for op in graph.get_operations():
        if op.type in ("Conv2D", "DepthwiseConv2dNative"):
            out = op.outputs[0].shape.as_list()
            kh, kw, cin, _ = op.inputs[1].shape.as_list()
            macs_per_out = kh * kw * (cin if op.type == "Conv2D" else 1)
            total += 2 * int(np.prod(out[1:])) * macs_per_out
    return total


# --------------------------------------------------------------------------------------------
# Keras
# --------------------------------------------------------------------------------------------


def _device_kind():
    import tensorflow as tf

    return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"


def mixed_policy_name():
    """bfloat16 on CPU (no float16 kernels worth using there), float16 on GPU."""
    return "mixed_float16" if _device_kind() == "gpu" else "mixed_bfloat16"


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


class KerasRunner:
    """`build_ssd` + `SSDLoss` compiled once; `time(steps)` runs `model.fit` for that many steps."""

    def __init__(self, batch_size, jit_compile=False, mixed_precision=False, seed=0, fused_bn=None,
                 freeze=None):
        import keras
        import tensorflow as tf

        from ssd_keras import AnchorConfig, backbones
        from ssd_keras.losses import SSDLoss
        from ssd_keras.model import build_ssd

        old_policy = keras.mixed_precision.global_policy()
        if mixed_precision:
            keras.mixed_precision.set_global_policy(mixed_policy_name())
        try:
            keras.utils.set_random_seed(seed)
            anchors = AnchorConfig()
            default_fused = backbones.FUSED_BN
            if fused_bn is not None:
                backbones.FUSED_BN = bool(fused_bn)
            try:
                self.model = build_ssd(NUM_CLASSES, anchors, backbone="resnet34", weights=None, image_size=IMAGE_SIZE)
            finally:
                backbones.FUSED_BN = default_fused
            self.fused_bn = any(isinstance(layer, backbones.FusedBatchNorm) for layer in _all_layers(self.model))
        finally:
            # The policy is read when layers are built; restore it so nothing else is affected.
            keras.mixed_precision.set_global_policy(old_policy)
        self.policy = mixed_policy_name() if mixed_precision else old_policy.name
        if freeze is not None:
            from ssd_keras.optimizers import freeze_to

            freeze_to(self.model, freeze)  # before compile: it fixes the trainable variables
        self.freeze = freeze
        # validate=False: the data is known-good and the checks are graph asserts (small cost).
        self.model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss=SSDLoss(anchors, NUM_CLASSES, validate=False),
            jit_compile=jit_compile,
        )
        images, y_true = synthetic_batch(batch_size, seed=seed)
        # One batch repeated from memory: the input pipeline is not part of this measurement.
        self.ds = tf.data.Dataset.from_tensors((images, y_true)).repeat()
        self.batch_size = batch_size
        self.loss = None

    def time(self, steps):
        """Seconds for `steps` training steps, from the start of the first to the end of the last."""
        import keras

        marks = []

        class _Clock(keras.callbacks.Callback):
            def on_train_batch_begin(self, batch, logs=None):
                if batch == 0:
                    marks.append(time.perf_counter())

            def on_train_batch_end(self, batch, logs=None):
                # Reading the loss waits for the step to finish (GPU execution is asynchronous).
                if logs and "loss" in logs:
                    float(logs["loss"])
                marks.append(time.perf_counter())

        hist = self.model.fit(self.ds, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False,
                              callbacks=[_Clock()])
        self.loss = float(hist.history["loss"][-1])
        return marks[-1] - marks[0]

    def info(self):
        return {"policy": self.policy, "final_loss": self.loss, "onednn": onednn_enabled(), "fused_bn": self.fused_bn,
                "freeze": self.freeze, "trainable_weights": len(self.model.trainable_weights)}

    def forward_flops(self):
        return keras_conv_flops(self.model)


def profile_keras(runner, logdir, steps=1, top=15):
    """Trace `steps` training steps with `tf.profiler` and sum the time per TF op type.

    Returns `[(op_type, ms, share of traced op time)]`, largest first, over TensorFlow's
    compute threads (the op kernels, not the Python side). The trace stays in `logdir` for
    TensorBoard's profile plugin. Used to find out where a training step's time goes.
    """
    return trace_op_times(lambda: runner.time(steps), logdir, top=top)


def trace_op_times(fn, logdir, top=15, by="type"):
    """Run `fn()` under `tf.profiler` and sum the op kernels' time per op type (`by="type"`)
    or per op (`by="name"`, e.g. `.../jaccard/Minimum:Minimum`): `[(key, ms, share)]`.

    Ops that run side by side on the inter-op pool each count their own wall time, so on a
    busy 2-core machine the sum can exceed the elapsed time and shares read as upper bounds.
    Cheap ops that the executor runs inline when an earlier op finishes are counted under
    `ExecutorDoneCallback`, not by name (in the loss, `Softplus` and `Abs` among them), so the
    named ops of a graph of many small ops are only part of its time.
    """
    import collections
    import glob

    import tensorflow as tf

    try:
        from tensorflow.tsl.profiler.protobuf import xplane_pb2
    except ImportError:  # moved between TF versions
        from tsl.profiler.protobuf import xplane_pb2

    # Level 3: every op kernel, also the cheap ones TensorFlow runs inline (level 2 leaves them out).
    tf.profiler.experimental.start(logdir, options=tf.profiler.experimental.ProfilerOptions(host_tracer_level=3))
    try:
        fn()
    finally:
        tf.profiler.experimental.stop()
    path = sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True), key=os.path.getmtime)[-1]
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    per_op = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            # Op kernels run on the executor's compute threads ("tf_Compute/..."); thread-pool
            # helpers ("ParallelFor") run inside them and would count twice.
            if not line.name.startswith("tf_Compute"):
                continue
            for ev in line.events:
                name = plane.event_metadata[ev.metadata_id].name
                op = name.rsplit(":", 1)[-1]
                if op in ("Process", "ParallelFor"):
                    continue
                per_op[op if by == "type" else name] += ev.duration_ps / 1e9
    total = sum(per_op.values()) or 1.0
    return [(op, ms, ms / total) for op, ms in per_op.most_common(top)]


class TorchRunner:
    """The lesson's training step in PyTorch. `mode`: eager, channels_last, compile, mp."""

    def __init__(self, batch_size, mode="eager", seed=0, freeze=None):
        import torch

        from ssd_keras.reference import lesson as LT
        from ssd_keras.reference import lesson_model as LM

        self.torch, self.LT, self.mode = torch, LT, mode
        dev = "cuda" if torch.cuda.is_available() else "cpu"
        torch.manual_seed(seed)
        self.model = LM.LessonSSD(NUM_CLASSES, k=9, multi=True).to(dev).train()
        if freeze is not None:
            self._freeze_to(freeze)
        self.freeze = freeze
        images, y_true = synthetic_batch(batch_size, seed=seed)
        self.x = LM.normalize_images(images).to(dev)
        if mode == "channels_last":
            self.model = self.model.to(memory_format=torch.channels_last)
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        bbox, clas = LT.targets_from_y_true(y_true)
        self.targ = [bbox.to(dev), clas.to(dev)]
        self.anc = LT.make_anchors()
        if dev == "cuda":  # the lesson keeps its anchor globals on the GPU
            for name in ("anchors", "grid_sizes", "anchor_cnr"):
                setattr(self.anc, name, getattr(self.anc, name).to(dev))
        self.loss_f = LT.BCE_Loss(NUM_CLASSES)
        self.opt = torch.optim.Adam([q for q in self.model.parameters() if q.requires_grad], lr=1e-3)
        # Only the model is compiled: the lesson's loss loops over images in Python with
        # data-dependent shapes (nonzero), which would just break the graph.
        self.fwd = torch.compile(self.model) if mode == "compile" else self.model
        self.dev, self.batch_size, self.loss = dev, batch_size, None

    def _freeze_to(self, n):
        """fastai's `freeze_to(n)` on the lesson's groups: [conv1 .. layer2, layer3 + layer4,
        head] (ConvnetBuilder's `lr_cut` for resnet34); frozen BatchNorms in eval mode, as
        fastai 0.7's `set_train_mode` puts them."""
        body = self.model.body
        groups = [[body.conv1, body.bn1, body.layer1, body.layer2], [body.layer3, body.layer4],
                  [self.model.head]]
        for group in groups[:n]:
            for module in group:
                module.requires_grad_(False)
                for m in module.modules():
                    if isinstance(m, self.torch.nn.BatchNorm2d):
                        m.eval()

    def _step(self):
        torch = self.torch
        self.opt.zero_grad()
        if self.mode == "mp":
            dtype = torch.bfloat16 if self.dev == "cpu" else torch.float16
            with torch.autocast(self.dev, dtype=dtype):
                pred = self.fwd(self.x)
            pred = [p.float() for p in pred]
        else:
            pred = self.fwd(self.x)
        loss = self.LT.ssd_loss(pred, self.targ, self.anc, self.loss_f)
        loss.backward()
        self.opt.step()
        return loss.item()  # waits for the step (GPU)

    def time(self, steps):
        t0 = time.perf_counter()
        for _ in range(steps):
            loss = self._step()
        self.loss = loss / self.batch_size  # the lesson sums over the batch; report the mean
        return time.perf_counter() - t0

    def info(self):
        return {"final_loss": self.loss, "threads": self.torch.get_num_threads(), "freeze": self.freeze,
                "trainable_weights": sum(q.requires_grad for q in self.model.parameters())}


# --------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------


def onednn_enabled() -> bool:
    """Whether this process's TensorFlow uses its oneDNN CPU kernels.

    TensorFlow's Linux default is on only for CPUs with AVX512_VNNI / AVX512_BF16 / AVX_VNNI /
    AMX (tensorflow/core/util/port.cc, `DefaultOneDnnPolicy`); elsewhere (e.g. AVX2-only AMD
    EPYC) convolutions run on Eigen kernels unless `TF_ENABLE_ONEDNN_OPTS=1` is set before
    TensorFlow is imported. PyTorch always uses oneDNN for CPU convolutions.
    """
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


class ChildRunner:
    """Any case's runner in a child process, driven step by step (`time N` on its stdin) so that
    it still takes part in the interleaved timing rounds.

    Used for every case unless `--same-process` (so no framework's thread pools share a process
    with another's: in one process, each framework's rate depended on which case ran just before
    it, bench/README.md), and always for the `keras-onednn` / `keras-eigen` / `-inter1` cases
    (`TF_ENABLE_ONEDNN_OPTS` and `TF_NUM_INTEROP_THREADS` are read once, when TensorFlow starts).
    """

    def __init__(self, case, batch_size, freeze=None):
        import subprocess

        tokens = case.split("-")
        env = dict(os.environ)
        if "onednn" in tokens or "eigen" in tokens:
            env["TF_ENABLE_ONEDNN_OPTS"] = "1" if "onednn" in tokens else "0"
        if "inter1" in tokens:
            env["TF_NUM_INTEROP_THREADS"] = "1"
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker", case, "--batch-size", str(batch_size),
             "--freeze", {v: k for k, v in FREEZE.items()}[freeze]],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )
        self.case, self.batch_size = case, batch_size
        self._ask("ping")

    def _ask(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline()
        if not reply:
            raise RuntimeError(f"train_step worker for {self.case} exited with {self.proc.wait()}; "
                               f"run the case alone to see its error")
        return json.loads(reply)

    def time(self, steps):
        return self._ask(f"time {steps}")

    def info(self):
        return self._ask("info")

    def forward_flops(self):
        return self._ask("flops")

    def __del__(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass


def _worker(case, batch_size, freeze=None):
    """The child side of `ChildRunner`: one JSON reply per command line."""
    out = sys.stdout
    sys.stdout = sys.stderr  # keep Keras / TF prints off the reply channel
    runner = _make_runner(case, batch_size, child=True, freeze=freeze)
    keras_case = case.startswith("keras")
    for line in sys.stdin:
        cmd, *arg = line.split()
        if cmd == "ping":
            reply = {"onednn": onednn_enabled() if keras_case else None}
        elif cmd == "time":
            reply = runner.time(int(arg[0]))
        elif cmd == "info":
            reply = {**runner.info(), **({"onednn": onednn_enabled()} if keras_case else {})}
        elif cmd == "flops":
            reply = runner.forward_flops() if keras_case else None
        else:
            break
        out.write(json.dumps(reply) + "\n")
        out.flush()


def default_cases(mixed_precision=False, quick=True):
    """All cases but the mixed-precision ones (unless asked), the oneDNN setting already in use,
    and, when `quick`, `torch-compile` (inductor compiles C++ for minutes on 2 cores)."""
    skip = {"keras-onednn" if onednn_enabled() else "keras-eigen"}
    # the BN and inter-op levers: ask with --only
    skip |= {c for c in KERAS_CASES if c.endswith(("-fbn", "-kbn", "-inter1"))}
    if quick:
        skip.add("torch-compile")
    if _device_kind() == "gpu":
        skip |= {c for c in KERAS_CASES if "onednn" in c or "eigen" in c}  # CPU kernels only
    return [c for c in ALL_CASES if c not in skip and (mixed_precision or not c.endswith("mp"))]


def _make_runner(case, batch_size, isolate=False, child=False, freeze=None):
    """The runner of `case`: in this process, or in a `ChildRunner` (always for the oneDNN
    switch cases, for every case with `isolate`); `child`: we are that child."""
    tokens = case.split("-")
    fused_bn = True if "fbn" in tokens else (False if "kbn" in tokens else None)
    if not child and (isolate or "onednn" in tokens or "eigen" in tokens or "inter1" in tokens):
        return ChildRunner(case, batch_size, freeze)
    if case.startswith("keras"):
        return KerasRunner(batch_size, jit_compile="xla" in tokens, mixed_precision=case.endswith("mp"),
                           fused_bn=fused_bn, freeze=freeze)
    mode = {"torch-eager": "eager", "torch-channels-last": "channels_last",
            "torch-compile": "compile", "torch-mp": "mp"}[case]
    return TorchRunner(batch_size, mode, freeze=freeze)


def _error(e):
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0][:300] if msg else ''}"


def run(quick=True, batch_size=None, warmup=None, steps=None, rounds=None, mixed_precision=False,
        only=None, peak_gflops=None, isolate=True, freeze=None):
    """Rows per case: img/s (median over rounds), ratio to `torch-eager`, fraction of peak.

    All runners are built and warmed up first, then timed in `rounds` interleaved rounds of
    `steps` steps each (case A, B, C, A, B, C, ...), so a change in machine load hits every
    case alike; the median round counts. `only`: case names from `ALL_CASES`; default:
    `default_cases(mixed_precision, quick)`. `peak_gflops`: the
    reference for the fraction of peak (measured with `bench/peak.py` if None). `isolate` (the
    default): each case in its own child process (`ChildRunner`), still interleaved; False runs
    them in this process, where each framework's idle thread pools slow the other (measured in
    bench/README.md, issue 13). `freeze`: fastai's `freeze_to(n)` on both sides (see the
    module docstring; None: every layer trains).
    """
    batch_size = batch_size or (16 if quick else 32)
    warmup = warmup or 2
    steps = steps or (2 if quick else 5)
    rounds = rounds or (2 if quick else 3)
    cases = list(only) if only else default_cases(mixed_precision, quick)
    unknown = set(cases) - set(ALL_CASES)
    if unknown:
        raise ValueError(f"train_step: unknown case(s) {sorted(unknown)}; choose from {ALL_CASES}")
    if peak_gflops is None and freeze is None:  # frozen steps have no 3x-forward FLOP count
        import peak

        peak_gflops = peak.measured_peak(peak.run(quick=True))

    rows = {c: {"bench": "train_step", "case": c, "unit": "img/s", "batch_size": batch_size,
                "warmup": warmup, "steps": steps, "rounds": rounds, "value": None} for c in cases}
    runners = {}
    for c in cases:
        try:
            t0 = time.perf_counter()
            runner = _make_runner(c, batch_size, isolate, freeze=freeze)
            runner.time(warmup)  # tracing, XLA / inductor compilation, allocator warm-up
            rows[c]["setup_s"] = round(time.perf_counter() - t0, 1)
            runners[c] = runner
        except Exception as e:  # noqa: BLE001 - one failing case must not lose the others
            rows[c]["error"] = _error(e)
        print(f"  train_step {c}: ready {rows[c].get('setup_s')} s {rows[c].get('error', '')}",
              file=sys.stderr, flush=True)
    samples = {c: [] for c in runners}
    for r in range(rounds):
        for c, runner in list(runners.items()):
            try:
                samples[c].append(batch_size * steps / runner.time(steps))
            except Exception as e:  # noqa: BLE001
                rows[c]["error"] = _error(e)
                del runners[c]
        print(f"  train_step round {r + 1}/{rounds}: " + ", ".join(f"{c} {v[-1]:.2f}" for c, v in samples.items() if v),
              file=sys.stderr, flush=True)
    flops = None
    for c, runner in runners.items():
        rows[c].update(value=float(np.median(samples[c])), samples=[round(v, 3) for v in samples[c]], **runner.info())
        if flops is None and c.startswith("keras") and freeze is None:
            flops = runner.forward_flops()
    if flops is None and freeze is None:
        try:
            from ssd_keras.reference.lesson_model import count_flops

            flops = count_flops(NUM_CLASSES, 9, True, IMAGE_SIZE)["forward_flops_per_image"]
        except ImportError:
            pass
    del runners
    gc.collect()

    rows = list(rows.values())
    base = rows_by_case(rows).get("torch-eager", {}).get("value")
    for r in rows:
        if r["value"] is None:
            continue
        if base:
            r["ratio"], r["ratio_to"] = r["value"] / base, "torch-eager"
        if r["case"].startswith("keras") and freeze is None:
            r["target"] = "≥ 1.2× torch, ≥ 60 % of peak"
            if base:
                r["met"] = r["ratio"] >= 1.2 and flops is not None and r["value"] * 3 * flops / 1e9 / peak_gflops >= 0.6
        if flops:
            r["train_gflop_per_img"] = 3 * flops / 1e9
            r["gflops"] = r["value"] * 3 * flops / 1e9
            r["peak_fraction"] = r["gflops"] / peak_gflops
            r["peak_gflops"] = peak_gflops
    return rows


def rows_by_case(rows):
    return {r["case"]: r for r in rows}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true", help="batch 32, 3 rounds of 5 steps")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--warmup", type=int, help="untimed steps per case (default 2)")
    p.add_argument("--steps", type=int, help="timed steps per round")
    p.add_argument("--rounds", type=int, help="interleaved timing rounds (median counts)")
    p.add_argument("--mixed-precision", action="store_true", help="add the mixed-precision cases")
    p.add_argument("--only", help=f"comma-separated cases from {','.join(ALL_CASES)}")
    p.add_argument("--json", help="write the rows to this file")
    p.add_argument("--profile", metavar="DIR",
                   help="instead of the benchmark: trace one Keras step (case from --only, default "
                        "keras) into DIR and print the time per TF op type")
    p.add_argument("--same-process", action="store_true",
                   help="run every case in this process instead of one child process per case "
                        "(then the frameworks' thread pools share the process)")
    p.add_argument("--freeze", choices=tuple(FREEZE), default="none",
                   help="none: every layer trains (default); head: the lesson's stage 1 (body frozen); "
                        "upper: its stage 2 (freeze_to(-2))")
    p.add_argument("--worker", metavar="CASE", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return _worker(args.worker, args.batch_size or 16, FREEZE[args.freeze])
    if args.profile:
        case = args.only.split(",")[0] if args.only else "keras"
        runner = _make_runner(case, args.batch_size or 16, freeze=FREEZE[args.freeze])
        runner.time(args.warmup or 2)
        print(f"| op ({case}, batch {runner.batch_size}) | ms | share |\n|---|---:|---:|")
        for op, ms, share in profile_keras(runner, args.profile, steps=args.steps or 1):
            print(f"| {op} | {ms:.0f} | {100 * share:.1f} % |")
        return
    rows = run(not args.full, args.batch_size, args.warmup, args.steps, args.rounds, args.mixed_precision,
               args.only.split(",") if args.only else None, isolate=not args.same_process,
               freeze=FREEZE[args.freeze])
    for r in rows:
        v = r.get("value")
        extra = r.get("error", "")
        if v and "ratio" in r:
            extra = f"ratio {r['ratio']:.2f}" + (
                f"  {r['gflops']:.1f} GFLOP/s = {100 * r['peak_fraction']:.0f}% of peak" if "gflops" in r else "")
        print(f"{r['case']:<22} {v if v is None else round(v, 2)!s:>8} img/s  {extra}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
