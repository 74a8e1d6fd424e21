"""Trained-pipeline parity: the lesson's PyTorch SSD and ssd_keras trained side by side.

`train_side_by_side` builds the lesson's `LessonSSD` (ResNet34 body + `SSD_Head` or
`SSD_MultiHead`) with a fixed torch seed, converts it with `ssd_keras.convert.convert_lesson_model`
(every weight, BatchNorm statistics included) and trains both models for `steps` steps on the
same fixed batches, with the same optimizer and learning rate:

* PyTorch: the lesson's `ssd_loss` with `FocalLoss` (or `BCE_Loss`) divided by the batch size
  (the lesson sums over the batch, `SSDLoss` takes the mean), `torch.optim.SGD` (or `Adam`);
* Keras: `SSDLoss(anchors, num_classes, pos_threshold, focal)` under a `tf.GradientTape`,
  `keras.optimizers.SGD` (or `Adam`).

Choices, and why:

* **What trains: fastai's `freeze_to`.** `freeze_to=-1` (default) trains the head with the body
  frozen: the lesson's first stage (`ConvLearner.pretrained` freezes the body); `-2` adds
  layer3 + layer4 (the lesson's `learn.freeze_to(-2)`); `0` trains everything. The Keras side
  uses `ssd_keras.optimizers.freeze_to` (groups `[stem + layer1 + layer2, layer3 + layer4,
  head]`), the PyTorch side the same groups (`torch_layer_groups`).
* **BatchNorm as fastai 0.7 runs it:** trainable layers in training mode (batch statistics),
  frozen ones in inference mode (fastai's `set_train_mode` puts the BN of frozen layers in
  `eval()`; Keras does that for `trainable=False`). Momentum (torch 0.1 = Keras 0.9) and eps
  (1e-5) are the same on both sides (`ssd_keras.backbones`, `ssd_keras.layers`). The running
  *variances* of training-mode layers are not expected to agree: PyTorch averages the unbiased
  batch variance into `running_var`, Keras the biased one (`n / (n - 1)` apart: 1 % for the
  7×7 map of a batch of 2, 2× for a 1×1 map). They do not enter a training-mode loss and are
  reported apart from the trained weights.
* **Dropout 0** on both sides: two frameworks cannot draw the same dropout masks.
* **SGD with momentum** (default). Keras' `m = mu m - lr g; w += m` and torch's `b = mu b + g;
  w -= lr b` are the same update for a constant learning rate (`m = -lr b`). **Adam** places
  epsilon differently: torch divides by `sqrt(v_t) / sqrt(1 - beta2^t) + eps`, Keras by
  `(sqrt(v_t) + eps) / sqrt(1 - beta2^t)` (it folds the bias correction into the step size), so
  Keras' epsilon is torch's `eps / sqrt(1 - beta2^t)`. `optimizer="adam"` sets torch's `eps` to
  that before every step (`matched_torch_adam_eps`), which makes the two updates the same.
* **No augmentation, no shuffling**: the batches are the first images of the VOC sample in file
  order (`data/voc2007_sample`, split "train", squashed to `image_size`), used in turn.
* **A float64 copy of the PyTorch side** (`float64_reference=True`) shows how far float32
  rounding alone moves the curve: the yardstick for the Keras-vs-PyTorch difference, which is
  float32 rounding in other orders (TensorFlow's oneDNN convolutions round 5-7× more than
  PyTorch's on a 256-channel 3×3 conv here; other reduction orders in BatchNorm and the loss).

How close the curves stay depends on how sensitive the training is to that rounding (notebook
07 shows both cases): with `head="single"` (the lesson's 4×4 `SSD_Head`) and the body frozen,
the PyTorch float32 and float64 curves agree to ~5e-7 and Keras to ~1e-4. The lesson's
`SSD_MultiHead` ends in a 1×1 map, where BatchNorm at batch 2 normalises 2 values per channel;
after the lesson's ReLU-before-BN, a channel with one image just above 0 and the other at 0 has
a batch variance far below eps (7 of 256 channels at the first step here, 66 more exactly 0),
and BN divides by `sqrt(var + 1e-5)`: rounding differences are amplified up to ~300×, and from
the third step PyTorch float32 and float64 differ by 0.1-2 %, Keras and PyTorch by 2-7 %.
Training the body in training mode (`freeze_to=0`) is as sensitive (float32 vs float64: 0.6-6 %
from the second step).
"""

from __future__ import annotations

import copy
import math
import time

import numpy as np
import torch

from ssd_keras.reference import lesson as lt
from ssd_keras.reference import lesson_model as ltm

__all__ = ["train_side_by_side", "voc_sample_batches", "torch_layer_groups", "matched_torch_adam_eps"]


def voc_sample_batches(num_batches, batch_size, image_size=224, split="train"):
    """The first `num_batches * batch_size` images of the shipped VOC sample, in file order.

    Returns a list of `(images float32 [B, S, S, 3] 0-255, y_true float32 [B, M, 5])` numpy
    pairs, no augmentation (the lesson's `CropType.NO` squash to `image_size`).
    """
    from ssd_keras.data import SAMPLE_VOC, load_source

    voc = load_source(f"voc:{SAMPLE_VOC}", split=split)
    ds = voc.dataset(image_size=image_size, batch_size=batch_size, shuffle=False, augment=None)
    batches = [(x.numpy(), y.numpy()) for x, y in ds.take(num_batches)]
    if len(batches) < num_batches:
        raise ValueError(f"voc_sample_batches: the sample has only {len(batches)} batches of {batch_size}")
    return batches


def torch_layer_groups(model):
    """fastai's layer groups of `LessonSSD`: `[stem + layer1 + layer2, layer3 + layer4, head]`.

    The split of `ssd_keras.backbones.layer_groups` (fastai's `ConvnetBuilder` cuts ResNet34's
    children at 6).
    """
    body = model.body
    return [[body.conv1, body.bn1, body.layer1, body.layer2], [body.layer3, body.layer4], [model.head]]


def matched_torch_adam_eps(epsilon, beta_2, step):
    """torch.optim.Adam's `eps` that gives `keras.optimizers.Adam(epsilon=epsilon)`'s update at
    `step` (1-based): Keras adds epsilon before dividing by `sqrt(1 - beta_2^step)`, torch after."""
    return epsilon / math.sqrt(1.0 - beta_2**step)


def _freeze_torch(model, n):
    """fastai's `freeze_to(n)` on `LessonSSD`; returns the frozen modules."""
    groups = torch_layer_groups(model)
    n = n % len(groups) if n < 0 else n
    frozen = [m for group in groups[:n] for m in group]
    for m in frozen:
        for p in m.parameters():
            p.requires_grad_(False)
    return frozen


def _train_mode(model, frozen):
    """fastai 0.7's `set_train_mode`: training mode, except the BatchNorm of frozen layers."""
    model.train()
    for m in frozen:
        for bn in m.modules():
            if isinstance(bn, torch.nn.BatchNorm2d):
                bn.eval()


def _lesson_anchors(multi):
    """The lesson's anchor cell: 4×4, 2×2, 1×1 with k = 9 (`SSD_MultiHead`) or 4×4 with k = 1."""
    if multi:
        return lt.make_anchors()
    return lt.make_anchors(anc_grids=[4], anc_zooms=[1.0], anc_ratios=[(1.0, 1.0)])


def _train_torch(model, frozen, batches, steps, dtype, optimizer, learning_rate, momentum, beta_1,
                 beta_2, epsilon, focal, pos_threshold, num_classes):
    """Train the PyTorch side in place (the lesson's loss / batch size); (losses, seconds)."""
    anc = _lesson_anchors(model.multi)
    anc.anchors, anc.grid_sizes, anc.anchor_cnr = (t.to(dtype) for t in (anc.anchors, anc.grid_sizes, anc.anchor_cnr))
    loss_f = lt.FocalLoss(num_classes) if focal else lt.BCE_Loss(num_classes)
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=learning_rate, momentum=momentum)
    else:
        opt = torch.optim.Adam(params, lr=learning_rate, betas=(beta_1, beta_2), eps=epsilon)
    _train_mode(model, frozen)
    inputs = []
    for x, y in batches:
        bbox, clas = lt.targets_from_y_true(y)
        inputs.append((ltm.normalize_images(x).to(dtype), [bbox.to(dtype), clas]))
    losses = []
    start = time.perf_counter()
    for step in range(steps):
        x, targ = inputs[step % len(inputs)]
        opt.zero_grad()
        loss = lt.ssd_loss(model(x), targ, anc, loss_f, thresh=pos_threshold) / len(x)
        loss.backward()
        if optimizer == "adam":
            for group in opt.param_groups:
                group["eps"] = matched_torch_adam_eps(epsilon, beta_2, step + 1)
        opt.step()
        losses.append(loss.item())
    return np.array(losses), time.perf_counter() - start


def _keras_weights(keras_model):
    return {w.path: np.array(w.numpy(), np.float64) for w in keras_model.weights}


def _as_keras(torch_model, keras_model):
    """`torch_model`'s weights in `keras_model`'s layout ({path: array}), through the
    conversion's own mapping (`copy_weights_to_keras`); `keras_model`'s weights are restored."""
    saved = {w.path: w.numpy() for w in keras_model.weights}
    ltm.copy_weights_to_keras(torch_model, keras_model)
    out = _keras_weights(keras_model)
    for w in keras_model.weights:
        w.assign(saved[w.path])
    return out


def _torch_params(model):
    return {n: p.detach().double().numpy().copy() for n, p in model.named_parameters()}


def _rel_diff(a, b):
    """|a - b| / |b|, elementwise."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.abs(a - b) / np.abs(b)


def _worst(a, b, names, scale=None):
    """max over `names` of max |a - b| / scale (default max |b|), and its name."""
    scale = scale or (lambda n: np.abs(b[n]).max())
    diffs = {n: np.abs(a[n] - b[n]).max() / scale(n) for n in names if scale(n) > 0}
    name = max(diffs, key=diffs.get)
    return float(diffs[name]), name


def train_side_by_side(
    steps=8,
    batch_size=2,
    num_batches=2,
    batches=None,
    head="single",
    freeze_to=-1,
    optimizer="sgd",
    learning_rate=0.01,
    momentum=0.9,
    beta_1=0.9,
    beta_2=0.999,
    epsilon=1e-7,
    focal=True,
    pos_threshold=0.4,
    num_classes=20,
    image_size=224,
    seed=0,
    num_threads=1,
    float64_reference=False,
):
    """Train the lesson's PyTorch SSD and its Keras copy side by side; return both loss curves.

    Args:
        steps: training steps on each side.
        batch_size, num_batches: the fixed batches (`voc_sample_batches`), used in turn
            (step `i` trains on batch `i % num_batches`). Ignored when `batches` is given.
        batches: instead, a list of `(images 0-255 [B, S, S, 3], y_true [B, M, 5])` numpy pairs;
            every image needs an object (the lesson's loss is NaN without one).
        head: "single": the lesson's 4×4 `SSD_Head` (k = 1, 16 anchors, `AnchorConfig.single_grid(4)`);
            "multi": its `SSD_MultiHead` (4×4, 2×2, 1×1, k = 9, 189 anchors, `AnchorConfig()`).
        freeze_to: fastai's `freeze_to`: -1 the head only (the lesson's first stage), -2 also
            layer3 + layer4, 0 everything (see the module doc).
        optimizer: "sgd" (with `momentum`) or "adam" (`beta_1`, `beta_2` and Keras' `epsilon`,
            which the torch side matches step by step; see the module doc).
        learning_rate: the same constant learning rate on both sides.
        focal: True for the lesson's `FocalLoss` (alpha 0.25, gamma 1), False for `BCE_Loss`.
        pos_threshold: the matching's IoU threshold (the lesson's 0.4).
        num_classes: object classes (20 for the VOC sample).
        image_size: 224, the lesson's: ResNet34's 7×7 map, which the head's stride-2 convs
            take to the 4×4 (2×2, 1×1) grids of the anchors.
        seed: `torch.manual_seed` before the PyTorch model is built (the initial weights).
        num_threads: `torch.set_num_threads` during the run (restored afterwards); None leaves
            it. Default 1: on a CPU shared with other jobs PyTorch's OpenMP threads spin-wait for
            each other (measured here: ~7 s per ResNet34 step at batch 2 with 2 threads on 2
            busy cores, 0.3 s with 1).
        float64_reference: also train a float64 copy of the PyTorch model (the `float64_*`
            entries): how far float32 rounding alone moves the curve.

    Returns:
        dict with
        `torch_loss`, `keras_loss`: per step, the loss of the batch *before* that step's update
            (float64 arrays); `loss_rel_diff`: per step, |keras - torch| / |torch|;
        `weight_rel_diff`: over the trained weights after the last step, max over tensors of
            max |keras - torch| / max |torch|, and `worst_weight`, that tensor's Keras path;
        `update_rel_diff`: the same difference relative to how far training moved the tensor,
            max |keras - torch| / max |torch - initial|;
        `weight_change`: max over the trained tensors of max |torch - initial| / max |initial|;
        `moving_mean_rel_diff`, `moving_variance_rel_diff`: the running statistics of the
            training-mode BatchNorm layers (the variances differ by design: module doc);
        `float64_loss`, `float64_rel_diff` (PyTorch float32 vs float64, per step),
            `float64_weight_rel_diff`, `float64_update_rel_diff` (PyTorch's own float32 error,
            measured like the Keras ones) when `float64_reference`, else None;
        `torch_seconds`, `keras_seconds`: the training loops alone (Keras' includes tracing
            its `tf.function`); `torch_model`, `keras_model`: the trained models; `settings`.
    """
    import keras
    import tensorflow as tf

    from ssd_keras import AnchorConfig, SSDLoss
    from ssd_keras.convert import convert_lesson_model
    from ssd_keras.optimizers import freeze_to as keras_freeze_to

    if head not in ("single", "multi"):
        raise ValueError(f"train_side_by_side: head must be 'single' or 'multi', got {head!r}")
    if freeze_to not in (-3, -2, -1, 0, 1, 2):
        raise ValueError("train_side_by_side: freeze_to must be -1 (the head), -2 (layer3, layer4 and the "
                         f"head) or 0 (everything), as fastai's; got {freeze_to!r}")
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"train_side_by_side: optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    if batches is None:
        batches = voc_sample_batches(num_batches, batch_size, image_size)
    batches = [(np.asarray(x, np.float32), np.asarray(y, np.float32)) for x, y in batches]
    empty = [i for i, (_, y) in enumerate(batches) if not (y[..., 4] >= 0).any(axis=-1).all()]
    if empty:
        raise ValueError(f"train_side_by_side: batches {empty} hold an image without objects "
                         "(the lesson's loss is NaN there)")

    old_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(int(num_threads))
    try:
        anchors = AnchorConfig() if head == "multi" else AnchorConfig.single_grid(4)
        torch.manual_seed(seed)
        torch_model = ltm.LessonSSD(num_classes=num_classes, k=anchors.k, multi=head == "multi", drop=0.0)
        for m in torch_model.modules():  # SSD_Head's StdConvs keep their own dropout (0.1)
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        # The conversion carries the module's dropout rates over (head and StdConvs).
        keras_model = convert_lesson_model(torch_model, num_classes, anchors, image_size=image_size)
        initial = _as_keras(torch_model, keras_model)
        initial_torch = _torch_params(torch_model)
        reference = copy.deepcopy(torch_model).double() if float64_reference else None

        # --- PyTorch: the lesson's loss, summed over the batch, / batch size ------------------
        train_args = dict(optimizer=optimizer, learning_rate=learning_rate, momentum=momentum,
                          beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, focal=focal,
                          pos_threshold=pos_threshold, num_classes=num_classes)
        torch_loss, torch_seconds = _train_torch(torch_model, _freeze_torch(torch_model, freeze_to), batches,
                                                 steps, torch.float32, **train_args)
        if reference is not None:
            float64_loss, _ = _train_torch(reference, _freeze_torch(reference, freeze_to), batches, steps,
                                           torch.float64, **train_args)

        # --- Keras: SSDLoss (mean over the batch), ssd_keras's freeze_to -----------------------
        keras_freeze_to(keras_model, freeze_to)
        loss_f = SSDLoss(anchors, num_classes, pos_threshold=pos_threshold, focal=(0.25, 1.0) if focal else None)
        if optimizer == "sgd":
            opt = keras.optimizers.SGD(learning_rate, momentum=momentum)
        else:
            opt = keras.optimizers.Adam(learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon)
        variables = keras_model.trainable_variables

        @tf.function
        def keras_step(x, y):
            with tf.GradientTape() as tape:
                value = loss_f(y, keras_model(x, training=True))
            opt.apply_gradients(zip(tape.gradient(value, variables), variables))
            return value

        keras_loss = []
        start = time.perf_counter()
        for step in range(steps):
            x, y = batches[step % len(batches)]
            keras_loss.append(float(keras_step(tf.constant(x), tf.constant(y))))
        keras_seconds = time.perf_counter() - start
        keras_loss = np.array(keras_loss)

        # --- weights, compared in the Keras layout (through the conversion's mapping) -------
        trained = _keras_weights(keras_model)
        from_torch = _as_keras(torch_model, keras_model)
    finally:
        if num_threads is not None:
            torch.set_num_threads(old_threads)

    trainable = [w.path for w in variables]
    moved = lambda n: np.abs(from_torch[n] - initial[n]).max()  # noqa: E731
    weight_rel_diff, worst_weight = _worst(trained, from_torch, trainable)
    stats = [n for n in trained if n.endswith(("moving_mean", "moving_variance")) and moved(n) > 0]
    result = {
        "torch_loss": torch_loss,
        "keras_loss": keras_loss,
        "loss_rel_diff": _rel_diff(keras_loss, torch_loss),
        "weight_rel_diff": weight_rel_diff,
        "worst_weight": worst_weight,
        "update_rel_diff": _worst(trained, from_torch, trainable, moved)[0],
        "weight_change": _worst(from_torch, initial, trainable)[0],
        "moving_mean_rel_diff": _worst(trained, from_torch, [n for n in stats if n.endswith("mean")])[0],
        "moving_variance_rel_diff": _worst(trained, from_torch, [n for n in stats if n.endswith("variance")])[0],
        "float64_loss": None,
        "float64_rel_diff": None,
        "float64_weight_rel_diff": None,
        "float64_update_rel_diff": None,
        "torch_seconds": torch_seconds,
        "keras_seconds": keras_seconds,
        "torch_model": torch_model,
        "keras_model": keras_model,
        "settings": {
            "steps": steps, "batch_size": len(batches[0][0]), "num_batches": len(batches), "head": head,
            "freeze_to": freeze_to, "optimizer": optimizer, "learning_rate": learning_rate,
            "momentum": momentum if optimizer == "sgd" else None, "focal": bool(focal),
            "image_size": image_size, "seed": seed, "trained_tensors": len(trainable),
        },
    }
    if reference is not None:  # PyTorch's own float32 error, in PyTorch's layout
        t32, t64 = _torch_params(torch_model), _torch_params(reference)
        names = [n for n, p in torch_model.named_parameters() if p.requires_grad]
        moved64 = lambda n: np.abs(t64[n] - initial_torch[n]).max()  # noqa: E731
        result.update(
            float64_loss=float64_loss,
            float64_rel_diff=_rel_diff(torch_loss, float64_loss),
            float64_weight_rel_diff=_worst(t32, t64, names)[0],
            float64_update_rel_diff=_worst(t32, t64, names, moved64)[0],
        )
    return result
