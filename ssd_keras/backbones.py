"""Backbones ("bodies"): images 0–255 RGB → the last feature map the SSD head sits on.

Every body is a `keras.Model` named `"backbone"` with its input normalisation *inside* (the
one its weights were trained with, through `keras.applications.imagenet_utils`), so callers
always feed raw 0–255 float images:

| name          | built from                              | normalisation | map at 224 | channels |
|---------------|-----------------------------------------|---------------|-----------|----------|
| `resnet34`    | here, torchvision's exact structure     | "torch" (ImageNet mean/std) | 7×7 | 512 |
| `resnet50`    | `keras.applications.ResNet50`           | "caffe" (BGR, mean)  | 7×7 | 2048 |
| `mobilenetv2` | `keras.applications.MobileNetV2`        | "tf" ([-1, 1])       | 7×7 | 1280 |
| `tiny`        | here, 4 stride-2 stages (CPU tests)     | "tf" ([-1, 1])      | 14×14 (image/16) | 128 |
| `tiny8`       | `tiny`'s first 3 stages (the CPU demo)  | "tf" ([-1, 1])      | 28×28 (image/8) | 96 |

Keras has no ResNet34, the lesson's body; `resnet34` below is torchvision's `resnet34` cut
before the average pool (fastai's `ConvnetBuilder` body), layer for layer, with PyTorch's
explicit padding and BatchNorm settings and layer names taken from torchvision's state-dict
keys (`layer1.0.conv1.weight` → layer `layer1_0_conv1`), so `load_torchvision_resnet34`
copies torchvision weights into it and the outputs agree to float32 precision.

Its ImageNet weights are torchvision's own (`resnet34-333f7ec4.pth`, the ones the lesson
used), read from the safetensors copy timm publishes on the Hugging Face hub
(`timm/resnet34.tv_in1k`, same state-dict keys), so no PyTorch is needed to use them.
"""

from __future__ import annotations

import os

import keras
import numpy as np
from keras import layers

_register = keras.saving.register_keras_serializable(package="ssd_keras")

# torchvision's resnet34 ImageNet weights as safetensors (timm's `resnet34.tv_in1k`: the
# tensors of torchvision's resnet34-333f7ec4.pth under torchvision's key names, plus `fc.*`).
# Cached by keras.utils.get_file as ~/.keras/models/RESNET34_IMAGENET_FILE.
RESNET34_IMAGENET_URL = "https://huggingface.co/timm/resnet34.tv_in1k/resolve/main/model.safetensors"
RESNET34_IMAGENET_FILE = "resnet34.tv_in1k.safetensors"
TORCH_SUFFIXES = (".pth", ".pt")
BACKBONES = ("resnet34", "resnet50", "mobilenetv2", "tiny", "tiny8")
#: the small bodies made here for CPU demos and tests: name -> `tiny_body` stage widths.
TINY_FILTERS = {"tiny": (32, 64, 96, 128), "tiny8": (32, 64, 96)}


@_register
class ImagePreprocessing(layers.Layer):
    """0–255 RGB images → a body's expected input, via `keras.applications.imagenet_utils`.

    `mode`: "torch" (x/255, ImageNet mean/std: torchvision/fastai), "caffe" (RGB→BGR, minus
    the BGR mean: Keras ResNet50) or "tf" (x/127.5 - 1: MobileNetV2). A layer rather than a
    `Lambda` so that `.keras` files load without `safe_mode=False`.
    """

    def __init__(self, mode="torch", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("torch", "caffe", "tf"):
            raise ValueError(f"ImagePreprocessing: mode must be 'torch', 'caffe' or 'tf', got {mode!r}")
        self.mode = mode

    def call(self, images):
        return keras.applications.imagenet_utils.preprocess_input(
            images, data_format="channels_last", mode=self.mode
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


# ------------------------------------------------------------------------------------------
# ResNet34, torchvision's structure
# ------------------------------------------------------------------------------------------


class FusedBatchNorm(layers.BatchNormalization):
    """`keras.layers.BatchNormalization` whose training-mode call is one fused kernel on TensorFlow.

    Keras 3 computes a training-mode batch norm as `moments` + `batch_normalization`: several
    passes over the activation forward and more backward. This layer runs the same
    computation as TensorFlow's `FusedBatchNormV3` (one kernel forward, `FusedBatchNormGradV3`
    backward: what `tf.keras` 2 did) for 4-D channels-last float inputs in training mode.
    Everything else (inference mode, frozen layers, other ranks or axes, masks, renorm, other
    backends) is the parent's code path.

    Same weights (`gamma, beta, moving_mean, moving_variance`, same names and order), same
    config and same moving-statistics rule as Keras 3: `moving = momentum * moving +
    (1 - momentum) * batch`, with the biased batch variance (the kernel's Bessel-corrected
    variance is scaled back by (n - 1) / n). Weight files (`.weights.h5`) are interchangeable
    with a `BatchNormalization` layer's (Keras names a layer's weights in those files after
    its class, so the class is called `BatchNormalization` there: see below); a `.keras`
    file records this class as `ssd_keras>FusedBatchNorm`. Tested against `keras.layers.BatchNormalization` in
    tests/test_backbones.py.
    """

    def _fused_ok(self, inputs, training, mask):
        return (
            training and self.trainable and mask is None and not self.renorm
            and keras.backend.backend() == "tensorflow" and len(inputs.shape) == 4
            and self.axis in (-1, 3) and self.scale and self.center
        )

    def call(self, inputs, training=None, mask=None):
        if not self._fused_ok(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        x = tf.cast(inputs, "float32")
        y, mean, var_unbiased, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=tf.cast(self.gamma, "float32"), offset=tf.cast(self.beta, "float32"),
            mean=tf.zeros([0], "float32"), variance=tf.zeros([0], "float32"),
            epsilon=self.epsilon, exponential_avg_factor=1.0, data_format="NHWC", is_training=True,
        )
        # The kernel returns the unbiased variance (for PyTorch-style running stats); Keras 3
        # averages the biased one.
        shape = tf.shape(x)
        n = tf.cast(shape[0] * shape[1] * shape[2], "float32")
        variance = var_unbiased * ((n - 1.0) / tf.maximum(n, 1.0))
        m = self.momentum
        self.moving_mean.assign(tf.cast(self.moving_mean, "float32") * m + mean * (1.0 - m))
        self.moving_variance.assign(tf.cast(self.moving_variance, "float32") * m + variance * (1.0 - m))
        return tf.cast(y, self.compute_dtype)


# Keras' weight files (.weights.h5 and the weights inside .keras) key each layer by the
# snake_case of its class's __name__ ("batch_normalization", "batch_normalization_1", ...),
# not by the layer's name: keep Keras' class name so files saved with either class load into
# the other. The registered name (the .keras config) stays "ssd_keras>FusedBatchNorm".
FusedBatchNorm.__name__ = FusedBatchNorm.__qualname__ = "BatchNormalization"
FusedBatchNorm = keras.saving.register_keras_serializable(package="ssd_keras", name="FusedBatchNorm")(FusedBatchNorm)

#: build the bodies' batch norms as `FusedBatchNorm` (True) or Keras' `BatchNormalization`.
#: Read when a body is built; `bench/train_step.py` measures both.
FUSED_BN = os.environ.get("SSD_KERAS_FUSED_BN", "1") != "0"


def _bn(name):
    # PyTorch BatchNorm2d defaults: eps 1e-5, momentum 0.1 (= Keras momentum 0.9).
    cls = FusedBatchNorm if FUSED_BN else layers.BatchNormalization
    return cls(momentum=0.9, epsilon=1e-5, name=name)


def _conv(x, filters, kernel, stride, pad, name):
    """PyTorch-style conv: explicit symmetric zero padding, then a "valid" conv, no bias.

    (Keras "same" pads stride-2 convs asymmetrically on even inputs, torch does not.)
    """
    if pad:
        x = layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
    return layers.Conv2D(filters, kernel, strides=stride, use_bias=False, name=name,
                         kernel_initializer=keras.initializers.HeNormal())(x)


def _basic_block(x, filters, stride, downsample, name):
    """torchvision's `BasicBlock`; `name` is e.g. `layer2_0` (state-dict prefix `layer2.0`)."""
    identity = x
    out = _conv(x, filters, 3, stride, 1, f"{name}_conv1")
    out = layers.ReLU(name=f"{name}_relu1")(_bn(f"{name}_bn1")(out))
    out = _conv(out, filters, 3, 1, 1, f"{name}_conv2")
    out = _bn(f"{name}_bn2")(out)
    if downsample:
        identity = _conv(x, filters, 1, stride, 0, f"{name}_downsample_0")
        identity = _bn(f"{name}_downsample_1")(identity)
    out = layers.Add(name=f"{name}_add")([out, identity])
    return layers.ReLU(name=f"{name}_relu2")(out)


def resnet34_body(input_shape=(224, 224, 3)):
    """torchvision `resnet34` without avgpool/fc: 0–255 images → `[B, S/32, S/32, 512]`."""
    inputs = keras.Input(input_shape, name="images")
    x = ImagePreprocessing("torch", name="preprocess")(inputs)
    x = _conv(x, 64, 7, 2, 3, "conv1")
    x = layers.ReLU(name="relu")(_bn("bn1")(x))
    # torch's MaxPool2d pads with -inf; after a ReLU every value is >= 0 and every window
    # holds at least one real value, so zero padding gives the same maxima.
    x = layers.ZeroPadding2D(1, name="maxpool_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="maxpool")(x)
    for layer, (filters, blocks, stride) in enumerate(
        [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)], start=1
    ):
        for b in range(blocks):
            s = stride if b == 0 else 1
            x = _basic_block(x, filters, s, downsample=(b == 0 and layer > 1), name=f"layer{layer}_{b}")
    return keras.Model(inputs, x, name="backbone")


def _to_numpy(value):
    if hasattr(value, "detach"):  # torch tensor, without importing torch
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.float()  # numpy has no bfloat16
        value = value.numpy()
    return np.asarray(value, dtype=np.float32)


def _torch_layer_keys(prefix, layer):
    """A Keras layer's weights as PyTorch state-dict keys, in `layer.weights` order.

    Conv2D ↔ `nn.Conv2d` (`weight`, `bias` if any); BatchNormalization ↔ `nn.BatchNorm2d`
    (`weight, bias, running_mean, running_var` = `gamma, beta, moving_mean, moving_variance`).
    """
    if isinstance(layer, layers.Conv2D):
        return [f"{prefix}.weight"] + ([f"{prefix}.bias"] if layer.use_bias else [])
    if isinstance(layer, layers.BatchNormalization):
        return [f"{prefix}.{p}" for p in ("weight", "bias", "running_mean", "running_var")]
    raise TypeError(f"no PyTorch counterpart for Keras layer {layer.name!r} ({type(layer).__name__})")


def _short(keys, n=5):
    keys = sorted(keys)
    return f"{keys[:n]}" + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def copy_torch_state(named_layers, state_dict, where, ignore=lambda key: False):
    """Copy a PyTorch `state_dict` into Keras Conv2D / BatchNormalization layers.

    `named_layers` maps a state-dict prefix (e.g. `"layer1.0.conv1"`) to its Keras layer.
    Conv kernels go OIHW → HWIO. Every key is checked before any weight is set (so a bad file
    leaves the model untouched): missing keys, unexpected keys (except those `ignore(key)`
    accepts and every `num_batches_tracked`) and shapes, each error naming the key and `where`.
    """
    expected = {}
    for prefix, layer in named_layers.items():
        for i, key in enumerate(_torch_layer_keys(prefix, layer)):
            expected[key] = (layer, i)
    given = {k for k in state_dict if not (k.endswith("num_batches_tracked") or ignore(k))}
    missing, unexpected = set(expected) - given, given - set(expected)
    if missing or unexpected:
        raise ValueError(
            f"{where}: the state dict does not match: "
            + ", ".join(
                f"{what} keys {_short(keys)}" for what, keys in (("missing", missing), ("unexpected", unexpected)) if keys
            )
        )
    values = {}
    for key, (layer, i) in expected.items():
        value = _to_numpy(state_dict[key])
        want = tuple(layer.weights[i].shape)
        torch_want = (want[3], want[2], want[0], want[1]) if len(want) == 4 else want  # HWIO -> OIHW
        if value.shape != torch_want:
            raise ValueError(
                f"{where}: {key!r} has shape {value.shape}, the Keras layer {layer.name!r} "
                f"needs {torch_want} (PyTorch layout)"
            )
        values.setdefault(id(layer), (layer, {}))[1][i] = value.transpose(2, 3, 1, 0) if len(want) == 4 else value
    for layer, by_index in values.values():
        layer.set_weights([by_index[i] for i in range(len(layer.weights))])


def load_torchvision_resnet34(backbone, state_dict):
    """Copy a torchvision resnet34 `state_dict` (tensors or numpy arrays) into `resnet34_body`.

    Keras layer `layer1_0_conv1` takes key `layer1.0.conv1.weight`; conv kernels go OIHW →
    HWIO; BatchNorm `weight, bias, running_mean, running_var` → `gamma, beta, moving_mean,
    moving_variance`. `fc.*` and `num_batches_tracked` are ignored. Raises a ValueError naming
    the missing / unexpected keys or a key with the wrong shape. Returns `backbone`.
    """
    named = {l.name.replace("_", "."): l for l in backbone.layers if l.weights}
    copy_torch_state(named, state_dict, "load_torchvision_resnet34", ignore=lambda k: k.startswith("fc."))
    return backbone


def read_state_dict(path):
    """A PyTorch state dict from a file: `{key: numpy array}`.

    `.safetensors` is read with the `safetensors` package (no torch needed); `.pth` / `.pt`
    (a `torch.save`d state dict, or a checkpoint dict with a "state_dict" entry) need torch.
    Raises FileNotFoundError / ValueError / ImportError naming the file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file {path!r} does not exist")
    if path.endswith(".safetensors"):
        try:
            from safetensors.numpy import load_file
        except ImportError as e:  # in requirements.txt, but say what to do if it is missing
            raise ImportError(f"reading {path!r} needs the safetensors package: pip install safetensors") from e
        try:
            return load_file(path)
        except Exception as e:  # safetensors raises its own error types for bad headers
            raise ValueError(f"could not read {path!r} as safetensors ({type(e).__name__}: {e})") from e
    if path.endswith(TORCH_SUFFIXES):
        try:
            from ssd_keras.reference.torch_files import read_pth

            return read_pth(path)
        except ImportError as e:  # torch is optional: the `reference` extra
            raise ImportError(
                f"reading the PyTorch file {path!r} needs torch: pip install torch (or pip install "
                "'ssd_keras[reference]'; the CPU build is enough). Or, on a machine with torch, convert it once to "
                "safetensors, which needs no torch: python -c \"import sys, torch, safetensors.torch "
                "as st; st.save_file(torch.load(sys.argv[1], map_location='cpu'), sys.argv[2])\" "
                "model.pth model.safetensors"
            ) from e
    raise ValueError(
        f"weights file {path!r}: unknown format; expected '.safetensors', '.pth' / '.pt' "
        "(PyTorch, needs torch) or a Keras '.weights.h5'"
    )


def _download(url, fname, what):
    try:
        return keras.utils.get_file(fname=fname, origin=url, cache_subdir="models")
    except Exception as e:  # offline, proxy, HTTP error: all the same to the user
        raise OSError(
            f"could not download {what} weights from {url} ({type(e).__name__}: {e}); "
            f"pass weights=None or a local file (on an offline machine: copy the file into "
            f"~/.keras/models/{fname}, or pass its path as weights=)"
        ) from e


# ------------------------------------------------------------------------------------------
# Tiny body for CPU demos and tests
# ------------------------------------------------------------------------------------------


def tiny_body(input_shape=(128, 128, 3), filters=(32, 64, 96, 128)):
    """A small conv body: one stage per entry of `filters`, each a stride-2 3×3 conv-BN-ReLU
    (stages 2 on add a stride-1 conv-BN-ReLU) — made for CPU demos and tests, not for VOC.

    * `tiny` (4 stages): map = image / 16 (8×8 at 128 px, 4×4 at 64 px), 128 channels,
      0.45 M parameters, about 0.22 GFLOPs (0.11 G multiply-adds) per 128 px image (ResNet34
      at 224: 7.3 GFLOPs).
    * `tiny8` (the first 3 stages): map = image / 8, 96 channels, 0.20 M parameters, 0.024 G
      multiply-adds per 64 px image. The demo's body: at 64 px its 8×8 map goes through the
      head's first stride-2 `StdConv` to the 4×4 grid, as ResNet34's 7×7 map does in the
      lesson, and keeps twice the detail for placing boxes (bench/README.md, "The demo's
      defaults": held-out mAP at IoU 0.7 0.59 against 0.52 with `tiny`; body and head together
      take about as many multiply-adds as `tiny`'s, whose head starts at 4×4).
    """
    inputs = keras.Input(input_shape, name="images")
    x = ImagePreprocessing("tf", name="preprocess")(inputs)
    for i, f in enumerate(filters, start=1):
        convs = [(2, "a")] + ([(1, "b")] if i > 1 else [])
        for stride, tag in convs:
            x = _conv(x, f, 3, stride, 1, f"stage{i}_{tag}_conv")
            x = layers.ReLU(name=f"stage{i}_{tag}_relu")(_bn(f"stage{i}_{tag}_bn")(x))
    return keras.Model(inputs, x, name="backbone")


# ------------------------------------------------------------------------------------------
# keras.applications bodies
# ------------------------------------------------------------------------------------------


def _application_body(name, weights, input_shape):
    app_cls, mode = {
        "resnet50": (keras.applications.ResNet50, "caffe"),
        "mobilenetv2": (keras.applications.MobileNetV2, "tf"),
    }[name]
    inputs = keras.Input(input_shape, name="images")
    x = ImagePreprocessing(mode, name="preprocess")(inputs)
    try:
        # input_tensor= makes the application's layers part of this graph (flat, so that
        # layer_groups can split them), rather than one nested Model layer.
        app = app_cls(include_top=False, weights=weights, input_tensor=x)
    except Exception as e:
        if weights == "imagenet" and not isinstance(e, ValueError):
            raise OSError(
                f"could not download {name} ImageNet weights ({type(e).__name__}: {e}); "
                "pass weights=None or a local file"
            ) from e
        raise
    return keras.Model(inputs, app.output, name="backbone")


# ------------------------------------------------------------------------------------------
# Public entry points
# ------------------------------------------------------------------------------------------


def get_backbone(name="resnet34", weights=None, input_shape=(224, 224, 3)):
    """A body by name: `keras.Model` "backbone", 0–255 RGB float images → last feature map.

    Args:
        name: "resnet34", "resnet50", "mobilenetv2", "tiny" or "tiny8" (see the module docstring).
        weights: None (random init), "imagenet" (downloaded once and cached by
            `keras.utils.get_file` under `~/.keras/models/`; for resnet34 torchvision's weights
            as `resnet34.tv_in1k.safetensors`, no torch needed), or a local file: a Keras
            `.weights.h5` saved from this body, or for resnet34 a torchvision state dict as
            `.safetensors` or `.pth` / `.pt` (the latter needs torch).
        input_shape: `(height, width, 3)`; any size the body accepts (>= 32 px).
    """
    if name not in BACKBONES:
        raise ValueError(f"get_backbone: unknown backbone {name!r}; choose one of {BACKBONES}")
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) != 3 or input_shape[-1] != 3 or min(input_shape[:2]) < 32:
        raise ValueError(
            f"get_backbone: input_shape must be (height, width, 3) with sides >= 32, got {input_shape}"
        )
    torch_formats = (".safetensors",) + TORCH_SUFFIXES
    local, state = None, None
    if weights not in (None, "imagenet"):
        local = os.fspath(weights)
        if not os.path.isfile(local):
            raise FileNotFoundError(f"get_backbone: weights file {local!r} does not exist")
        if not local.endswith((".weights.h5",) + (torch_formats if name == "resnet34" else ())):
            raise ValueError(
                f"get_backbone: weights file {local!r}: expected a Keras '.weights.h5' file"
                + (" or a torchvision state dict ('.safetensors', or '.pth' / '.pt' with torch)"
                   if name == "resnet34" else f" (PyTorch state dicts are read for resnet34 only, not {name!r})")
            )
    elif weights == "imagenet" and name in TINY_FILTERS:
        raise ValueError(f"get_backbone: the {name!r} body has no ImageNet weights; use weights=None")

    # Read (or download) PyTorch weights before the build, so a bad file fails fast.
    if name == "resnet34" and weights == "imagenet":
        local = _download(RESNET34_IMAGENET_URL, RESNET34_IMAGENET_FILE, "torchvision resnet34 ImageNet")
    if name == "resnet34" and local is not None and local.endswith(torch_formats):
        state = read_state_dict(local)

    if name in ("resnet50", "mobilenetv2"):
        body = _application_body(name, "imagenet" if weights == "imagenet" else None, input_shape)
    elif name == "resnet34":
        body = resnet34_body(input_shape)
    else:
        body = tiny_body(input_shape, TINY_FILTERS[name])

    if state is not None:
        try:
            load_torchvision_resnet34(body, state)
        except ValueError as e:
            raise ValueError(f"get_backbone: weights file {local!r}: {e}") from e
    elif local is not None:
        try:
            body.load_weights(local)
        except Exception as e:
            raise ValueError(
                f"get_backbone: could not load {local!r} into the {name!r} body "
                f"({type(e).__name__}: {e}); was it saved from this body?"
            ) from e
    return body


def _output_stride(layer, image_size):
    shape = getattr(layer, "output", None)
    shape = getattr(shape, "shape", None)
    if shape is None or len(shape) != 4 or not shape[1]:
        return 1
    return image_size / shape[1]


def layer_groups(model):
    """fastai-style layer groups for `freeze_to` and discriminative learning rates.

    Returns `[early, late, head]`, lists of Keras layers: `late` = the body's layers from the
    first one whose output is at half the body's final stride or coarser, `early` = the body's
    layers before it (input and normalisation included), `head` =
    every layer of `model` outside the body. So the split is at the 1/16-of-the-image stage:
    ResNet34 (the lesson's split): stem + layer1 + layer2 | layer3 + layer4; ResNet50:
    conv1..conv3 | conv4 + conv5; MobileNetV2: up to block_6's expansion | block_6's stride-2
    depthwise conv onwards; tiny (final stride 16): stage1 + stage2 | stage3 + stage4;
    tiny8 (final stride 8): stage1 | stage2 + stage3.

    `model` is a `build_ssd` model (with a layer named "backbone") or a backbone itself (then
    `head` is empty).
    """
    try:
        body = model if model.name == "backbone" else model.get_layer("backbone")
    except ValueError as e:
        raise ValueError(
            f"layer_groups: model {model.name!r} has no layer named 'backbone' (build it with build_ssd)"
        ) from e
    size = body.inputs[0].shape[1]
    strides = [_output_stride(l, size) for l in body.layers]
    # Split at the first layer (topological order) at half the final stride or coarser;
    # everything after it is late too (padding layers there have finer outputs, no weights).
    final = max(strides)
    split = next(i for i, s in enumerate(strides) if s >= final / 2)
    early, late = list(body.layers[:split]), list(body.layers[split:])
    head = [] if body is model else [
        l for l in model.layers if l is not body and not isinstance(l, keras.layers.InputLayer)
    ]
    return [early, late, head]
