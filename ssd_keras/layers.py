"""The lesson's SSD head as serialisable Keras layers: `StdConv`, `OutConv`, `flatten_conv`,
`SSDHead` (the lesson's `SSD_Head`) and `SSDMultiHead` (the lesson's `SSD_MultiHead`).

Layout is NHWC (Keras' default), so the lesson's `permute(0, 2, 3, 1)` disappears from
`flatten_conv`. Output of both heads is ssd_keras's `y_pred` `[batch, A, 4 + C + 1]`: box
activations first, then class logits with background last (docs/ARCHITECTURE.md).

Weights keep the lesson's names so they can be copied from the PyTorch head one to one:
`StdConv.conv` / `.bn`, `OutConv.oconv1` (classes) / `.oconv2` (boxes), and the heads expose
their sub-layers by the lesson's attribute names through `lesson_layers()` (`sconv0`,
`sconv1`, ..., `out1`, `out2`, ... for the multi head; `sconv0`, `sconv2`, `out` for the
single head).
"""

from __future__ import annotations

import math

import keras
from keras import layers, ops

from ssd_keras.anchors import AnchorConfig

_register = keras.saving.register_keras_serializable(package="ssd_keras")


def _torch_conv_initializers(fan_in):
    """PyTorch's default `nn.Conv2d` init (kaiming_uniform with a=sqrt(5), uniform bias).

    Both are U(-1/sqrt(fan_in), 1/sqrt(fan_in)); VarianceScaling(1/3, fan_in, uniform) gives
    that bound for the kernel. Used so that training from scratch starts like the lesson's head.
    """
    bound = 1.0 / math.sqrt(fan_in)
    kernel = keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform")
    bias = keras.initializers.RandomUniform(-bound, bound)
    return kernel, bias


def flatten_conv(x, k):
    """The lesson's `flatten_conv`: conv output `[B, H, W, k * n]` → `[B, H * W * k, n]`.

    Anchors come out cells row-major, then the `k` anchors of a cell: the lesson's order
    (its `permute(0, 2, 3, 1).view(bs, -1, nf // k)`; NHWC needs no permute).
    """
    channels = x.shape[-1]
    if channels is None or channels % k:
        raise ValueError(
            f"flatten_conv: channels ({channels}) must be a known multiple of k ({k})"
        )
    h, w = x.shape[1], x.shape[2]
    middle = h * w * k if (h is not None and w is not None) else -1
    return ops.reshape(x, (ops.shape(x)[0], middle, channels // k))


@_register
class StdConv(layers.Layer):
    """The lesson's `StdConv`: 3×3 conv → ReLU → BatchNorm → Dropout (in that order).

    PyTorch pads 1 on every side. Keras' `padding="same"` pads stride-2 convs on even inputs
    only at the bottom/right, which shifts every output by half a pixel, so weights converted
    from the lesson's head would give different numbers; an explicit `ZeroPadding2D(1)` plus
    a "valid" conv is exactly PyTorch's `padding=1` (`out = ceil(in / stride)` for stride 2).
    BatchNorm uses PyTorch's eps=1e-5 and momentum 0.1 (Keras momentum 0.9). The conv is
    initialised as PyTorch's default.
    """

    def __init__(self, filters=256, strides=2, dropout=0.1, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.strides = int(strides)
        self.dropout = float(dropout)
        self.pad = layers.ZeroPadding2D(1, name="pad")
        self.conv = layers.Conv2D(self.filters, 3, strides=self.strides, padding="valid", name="conv")
        self.bn = layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name="bn")
        self.drop = layers.Dropout(self.dropout, name="drop")

    def build(self, input_shape):
        kernel_init, bias_init = _torch_conv_initializers(9 * input_shape[-1])
        self.conv.kernel_initializer, self.conv.bias_initializer = kernel_init, bias_init
        padded = (input_shape[0],) + tuple(
            None if s is None else s + 2 for s in input_shape[1:3]
        ) + (input_shape[3],)
        self.conv.build(padded)
        self.bn.build(self.conv.compute_output_shape(padded))

    def call(self, x, training=None):
        x = ops.relu(self.conv(self.pad(x)))
        return self.drop(self.bn(x, training=training), training=training)

    def compute_output_shape(self, input_shape):
        padded = (input_shape[0],) + tuple(
            None if s is None else s + 2 for s in input_shape[1:3]
        ) + (input_shape[3],)
        return self.conv.compute_output_shape(padded)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "strides": self.strides,
            "dropout": self.dropout,
        }


@_register
class OutConv(layers.Layer):
    """The lesson's `OutConv`: two 3×3 convs (stride 1, pad 1) on the same feature map.

    `oconv1` gives `(num_classes + 1) * k` class logits, its bias initialised to the constant
    `bias` (-3 or -4 in the lesson: every class starts at sigmoid(bias) ≈ 0.05 / 0.02, so the
    BCE loss does not start huge on the many background anchors); `oconv2` gives `4 * k` box
    activations. Each is flattened with `flatten_conv` and they are concatenated as `y_pred`:
    `[B, H * W * k, 4 + num_classes + 1]` (boxes, classes, background last).
    """

    def __init__(self, k, num_classes, bias=-3.0, **kwargs):
        super().__init__(**kwargs)
        self.k = int(k)
        self.num_classes = int(num_classes)
        self.bias = float(bias)
        if self.k < 1 or self.num_classes < 1:
            raise ValueError(f"OutConv: k and num_classes must be >= 1, got k={k}, num_classes={num_classes}")
        # Stride 1 with an odd kernel: "same" pads symmetrically, identical to PyTorch's padding=1.
        self.oconv1 = layers.Conv2D((self.num_classes + 1) * self.k, 3, padding="same", name="oconv1")
        self.oconv2 = layers.Conv2D(4 * self.k, 3, padding="same", name="oconv2")

    def build(self, input_shape):
        kernel_init, bias_init = _torch_conv_initializers(9 * input_shape[-1])
        self.oconv1.kernel_initializer = kernel_init
        self.oconv1.bias_initializer = keras.initializers.Constant(self.bias)
        self.oconv2.kernel_initializer, self.oconv2.bias_initializer = kernel_init, bias_init
        self.oconv1.build(input_shape)
        self.oconv2.build(input_shape)

    def call(self, x):
        classes = flatten_conv(self.oconv1(x), self.k)
        boxes = flatten_conv(self.oconv2(x), self.k)
        return ops.concatenate([boxes, classes], axis=-1)

    def compute_output_shape(self, input_shape):
        h, w = input_shape[1], input_shape[2]
        n = h * w * self.k if (h is not None and w is not None) else None
        return (input_shape[0], n, 4 + self.num_classes + 1)

    def get_config(self):
        return {**super().get_config(), "k": self.k, "num_classes": self.num_classes, "bias": self.bias}


class GridsUnreachableError(ValueError):
    """`plan_head`: the feature map cannot be halved onto the anchor grids. A ValueError; its own
    type so that the command line can name `--grids` without reading the message."""


def plan_head(feature_size, grids, image_size=None, where="SSD head"):
    """How many stride-2 `StdConv`s lead to each grid: `[n_before_grid0, n_between_0_1, ...]`.

    A stride-2 StdConv (pad 1) maps `s` to `ceil(s / 2)`. The feature map is halved until it
    is `grids[0]`, then between consecutive grids. Raises `GridsUnreachableError` (a ValueError)
    naming the feature size, the image size (when known) and the grids when the sizes cannot be
    reached.
    """
    grids = tuple(int(g) for g in grids)

    def fail(path):
        img = f" (image_size={image_size})" if image_size is not None else ""
        reachable, s = [int(feature_size)], int(feature_size)
        while s > 1:
            s = (s + 1) // 2
            reachable.append(s)
        raise GridsUnreachableError(
            f"{where}: the backbone's {feature_size}x{feature_size} feature map{img} cannot "
            f"reach anchors.grids={grids} by stride-2 convs (each maps s to ceil(s/2)): "
            f"{' -> '.join(map(str, path))}. This map reaches the grids {tuple(reachable)}: "
            f"choose grids among them (coarsest last), or an image size whose map halves onto "
            f"your grids (e.g. 224 for ResNet34 and grids (4, 2, 1))."
        )

    if feature_size is None:
        raise ValueError(
            f"{where}: the feature map size must be known when the head is built; build the "
            f"model with a fixed image_size (got an unknown spatial size)."
        )
    plan, size, path = [], int(feature_size), [int(feature_size)]
    for g in grids:
        n = 0
        while size > g:
            size = (size + 1) // 2
            path.append(size)
            n += 1
        if size != g:
            fail(path + [f"needed {g}"])
        plan.append(n)
    return plan


class _HeadBase(layers.Layer):
    """Shared code of the two heads: dropout(relu(x)) → sconv0 (stride 1) → stride-2 StdConvs
    down to each grid, an `OutConv` per grid, outputs concatenated along the anchors."""

    _lesson_single = False

    def __init__(self, num_classes, anchors, bias, dropout, conv_dropout, filters=256, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.anchors = AnchorConfig.coerce(anchors)
        self.bias = float(bias)
        self.dropout = float(dropout)
        self.conv_dropout = float(conv_dropout)
        self.filters = int(filters)
        if self.num_classes < 1:
            raise ValueError(f"{type(self).__name__}: num_classes must be >= 1, got {num_classes}")
        self.drop = layers.Dropout(self.dropout, name="drop")
        self.sconv0 = StdConv(self.filters, strides=1, dropout=self.conv_dropout, name="sconv0")

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[1] != input_shape[2]:
            raise ValueError(
                f"{type(self).__name__}: expects a square NHWC feature map, got shape {tuple(input_shape)}"
            )
        plan = plan_head(input_shape[1], self.anchors.grids, where=type(self).__name__)
        # Sub-layers depend on the feature map size, so they are made here; Keras calls build()
        # with the saved input shape before loading weights, so `.keras` files round-trip.
        self.sconvs, self.outs, self._plan = [], [], plan
        names = iter(f"sconv{i}" for i in (range(2, 99) if self._lesson_single else range(1, 99)))
        shape = self.sconv0.compute_output_shape(input_shape)
        self.sconv0.build(input_shape)
        for gi, n in enumerate(plan):
            for _ in range(n):
                conv = StdConv(self.filters, strides=2, dropout=self.conv_dropout, name=next(names))
                conv.build(shape)
                shape = conv.compute_output_shape(shape)
                self.sconvs.append(conv)
            out_name = "out" if self._lesson_single else f"out{gi + 1}"
            out = OutConv(self.anchors.k, self.num_classes, self.bias, name=out_name)
            out.build(shape)
            self.outs.append(out)

    def call(self, x, training=None):
        x = self.drop(ops.relu(x), training=training)
        x = self.sconv0(x, training=training)
        convs, outputs = iter(self.sconvs), []
        for n, out in zip(self._plan, self.outs):
            for _ in range(n):
                x = next(convs)(x, training=training)
            outputs.append(out(x))
        return outputs[0] if len(outputs) == 1 else ops.concatenate(outputs, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.anchors.num_anchors, 4 + self.num_classes + 1)

    def lesson_layers(self):
        """Sub-layers by the lesson's attribute names (`sconv0`, `sconv1`, `out1`, ...)."""
        named = {"sconv0": self.sconv0}
        named.update({c.name: c for c in self.sconvs})
        named.update({o.name: o for o in self.outs})
        return named

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "anchors": self.anchors.get_config(),
            "bias": self.bias,
            "dropout": self.dropout,
            "filters": self.filters,
        }


@_register
class SSDHead(_HeadBase):
    """The lesson's `SSD_Head` (first half of the lesson: one 4×4 grid, k = 1).

    `dropout(relu(x))` (0.25) → `StdConv(256, stride 1)` → `StdConv(256)` → `OutConv(bias=-3)`.
    The lesson's StdConvs keep their default dropout 0.1 (`conv_dropout`). Generalised: the
    stride-2 StdConvs repeat until the map is `anchors.grids[0]` (one of them, 7 → 4, for a
    224 image on ResNet34; none if the body already gives a 4×4 map). `anchors` must have a
    single grid. Output `[B, g * g * k, 4 + num_classes + 1]`.
    """

    _lesson_single = True

    def __init__(self, num_classes, anchors=None, bias=-3.0, dropout=0.25, conv_dropout=0.1, filters=256, **kwargs):
        anchors = AnchorConfig.single_grid(4) if anchors is None else AnchorConfig.coerce(anchors)
        if len(anchors.grids) != 1:
            raise ValueError(
                f"SSDHead: anchors must have one grid (got grids={anchors.grids}); use SSDMultiHead"
            )
        super().__init__(num_classes, anchors, bias, dropout, conv_dropout, filters, **kwargs)

    def get_config(self):
        return {**super().get_config(), "conv_dropout": self.conv_dropout}


@_register
class SSDMultiHead(_HeadBase):
    """The lesson's `SSD_MultiHead`: one `OutConv` per grid (4×4, 2×2, 1×1 by default).

    `dropout(relu(x))` → `sconv0` (stride 1) → `sconv1` (7 → 4) → `out1`, `sconv2` (→ 2) →
    `out2`, `sconv3` (→ 1) → `out3`; the lesson's `drop = 0.4` everywhere, OutConv bias -4.
    Generalised to any `anchors.grids` the feature map reaches by halving (`ceil`); other
    sizes raise a ValueError naming the feature size and the grids. Output
    `[B, anchors.num_anchors, 4 + num_classes + 1]`, grids concatenated in order.
    (The lesson also creates an `out0` it never calls; it has no counterpart here.)
    """

    def __init__(self, num_classes, anchors=None, bias=-4.0, dropout=0.4, filters=256, **kwargs):
        kwargs.pop("conv_dropout", None)
        super().__init__(num_classes, AnchorConfig.coerce(anchors), bias, dropout, dropout, filters, **kwargs)
