"""The lesson's SSD model in plain PyTorch: a reference for parity tests and benchmarks.

This is the *PyTorch side* of the side-by-side comparison, not part of the Keras API. It needs
`torch` (an optional dependency, see `requirements-test.txt`) and is imported only by the
tests and `bench/`.

What is here:

* `resnet34_body()` — torchvision's `resnet34` (BasicBlock, layers `[3, 4, 6, 3]`), cut
  before the average pool as fastai's `ConvnetBuilder` cuts it. Written out by hand because
  torchvision is not a dependency; the module and parameter names are torchvision's
  (`conv1.weight`, `layer1.0.conv1.weight`, `layer2.0.downsample.0.weight`, ...), so a
  torchvision `resnet34` state dict loads into it with `load_state_dict(..., strict=False)`
  (only `fc.*` is left over).
* `StdConv`, `OutConv`, `flatten_conv`, `SSD_Head`, `SSD_MultiHead` — transcribed from the
  lesson, with `num_classes` instead of the `id2cat` global and `drop` as an argument instead
  of the notebook's global `drop = 0.4`.
* `LessonSSD(num_classes, k, multi=True)` — body + head, returning the lesson's
  `[class_logits [B, A, C + 1], box_activations [B, A, 4]]`.
* `to_y_pred(outputs)` — the same two tensors in ssd_keras's `y_pred` layout
  `[B, A, 4 + C + 1]` (boxes first, background last).
* `copy_weights_to_keras(torch_model, keras_model)` — copies every weight into an
  `ssd_keras.model.build_ssd` model so that both give the same outputs.

Images go in as the lesson feeds them: NCHW float, already normalised with the ImageNet
mean/std (fastai's transforms do that outside the model). `normalize_images` does it for
0–255 NHWC batches, the input convention of the Keras model.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------------------------
# torchvision resnet34, transcribed (torchvision/models/resnet.py, BasicBlock)
# --------------------------------------------------------------------------------------------


def _conv3x3(nin, nout, stride=1):
    return nn.Conv2d(nin, nout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """torchvision's `BasicBlock`: two 3×3 conv + BN, identity or 1×1-conv + BN shortcut."""

    expansion = 1

    def __init__(self, nin, nout, stride=1, downsample=None):
        super().__init__()
        self.conv1 = _conv3x3(nin, nout, stride)
        self.bn1 = nn.BatchNorm2d(nout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(nout, nout)
        self.bn2 = nn.BatchNorm2d(nout)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNetBody(nn.Module):
    """torchvision's `ResNet` without `avgpool` / `fc` (fastai's body: children[:-2]).

    Attribute names are torchvision's so that state-dict keys match exactly.
    """

    def __init__(self, layers=(3, 4, 6, 3)):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=2)
        # torchvision's default initialisation (kaiming for convs, BN weight 1 / bias 0).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)


def resnet34_body() -> ResNetBody:
    """torchvision `resnet34` cut before `avgpool`: `[B, 3, 224, 224]` → `[B, 512, 7, 7]`."""
    return ResNetBody((3, 4, 6, 3))


def resnet34_state_dict_keys(include_fc: bool = False) -> list[str]:
    """torchvision resnet34's state-dict keys, written out from its structure (not from a model).

    Used by the tests as the independent expectation for `resnet34_body().state_dict()`.
    """

    def bn(prefix):
        return [f"{prefix}.{n}" for n in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]

    keys = ["conv1.weight", *bn("bn1")]
    for layer, blocks in zip((1, 2, 3, 4), (3, 4, 6, 3)):
        for b in range(blocks):
            p = f"layer{layer}.{b}"
            keys += [f"{p}.conv1.weight", *bn(f"{p}.bn1"), f"{p}.conv2.weight", *bn(f"{p}.bn2")]
            if b == 0 and layer > 1:  # stride 2 and a channel change: 1x1 conv + BN shortcut
                keys += [f"{p}.downsample.0.weight", *bn(f"{p}.downsample.1")]
    if include_fc:
        keys += ["fc.weight", "fc.bias"]
    return keys


# --------------------------------------------------------------------------------------------
# The lesson's head (seed: StdConv, OutConv, flatten_conv, SSD_Head, SSD_MultiHead)
# --------------------------------------------------------------------------------------------


class StdConv(nn.Module):
    """The lesson's `StdConv`: 3×3 conv (stride 2 by default) → ReLU → BatchNorm → Dropout."""

    def __init__(self, nin, nout, stride=2, drop=0.1):
        super().__init__()
        self.conv = nn.Conv2d(nin, nout, 3, stride=stride, padding=1)
        self.bn = nn.BatchNorm2d(nout)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.bn(F.relu(self.conv(x))))


def flatten_conv(x, k):
    """The lesson's `flatten_conv`: `[B, k*n, H, W]` → `[B, H*W*k, n]` (cells row-major, then k)."""
    bs, nf, gx, gy = x.size()
    x = x.permute(0, 2, 3, 1).contiguous()
    return x.view(bs, -1, nf // k)


class OutConv(nn.Module):
    """The lesson's `OutConv`: `(num_classes+1)*k` class channels (bias = `bias`) and `4*k` box channels."""

    def __init__(self, k, nin, bias, num_classes):
        super().__init__()
        self.k = k
        self.oconv1 = nn.Conv2d(nin, (num_classes + 1) * k, 3, padding=1)
        self.oconv2 = nn.Conv2d(nin, 4 * k, 3, padding=1)
        self.oconv1.bias.data.zero_().add_(bias)

    def forward(self, x):
        return [flatten_conv(self.oconv1(x), self.k), flatten_conv(self.oconv2(x), self.k)]


class SSD_Head(nn.Module):
    """The lesson's single-grid head: 7×7 → `sconv0` (stride 1) → `sconv2` (4×4) → `OutConv`."""

    def __init__(self, k, bias, num_classes, drop=0.25):
        super().__init__()
        self.drop = nn.Dropout(drop)
        self.sconv0 = StdConv(512, 256, stride=1)
        self.sconv2 = StdConv(256, 256)
        self.out = OutConv(k, 256, bias, num_classes)

    def forward(self, x):
        x = self.drop(F.relu(x))
        x = self.sconv0(x)
        x = self.sconv2(x)
        return self.out(x)


class SSD_MultiHead(nn.Module):
    """The lesson's multi-grid head: 4×4, 2×2 and 1×1 outputs concatenated along anchors.

    Like the lesson it creates `out0` but never calls it (kept so the parameter list — and so
    the optimizer's weight decay and a state dict — match the notebook's).
    """

    def __init__(self, k, bias, num_classes, drop=0.4):
        super().__init__()
        self.drop = nn.Dropout(drop)
        self.sconv0 = StdConv(512, 256, stride=1, drop=drop)
        self.sconv1 = StdConv(256, 256, drop=drop)
        self.sconv2 = StdConv(256, 256, drop=drop)
        self.sconv3 = StdConv(256, 256, drop=drop)
        self.out0 = OutConv(k, 256, bias, num_classes)
        self.out1 = OutConv(k, 256, bias, num_classes)
        self.out2 = OutConv(k, 256, bias, num_classes)
        self.out3 = OutConv(k, 256, bias, num_classes)

    def forward(self, x):
        x = self.drop(F.relu(x))
        x = self.sconv0(x)
        x = self.sconv1(x)
        o1c, o1l = self.out1(x)  # 4x4
        x = self.sconv2(x)
        o2c, o2l = self.out2(x)  # 2x2
        x = self.sconv3(x)
        o3c, o3l = self.out3(x)  # 1x1
        return [torch.cat([o1c, o2c, o3c], dim=1), torch.cat([o1l, o2l, o3l], dim=1)]


class LessonSSD(nn.Module):
    """ResNet34 body + the lesson's head (`ConvnetBuilder(f_model, 0, 0, 0, custom_head=head)`).

    `multi=True`: `SSD_MultiHead(k, -4.)` (189 anchors for k=9); `multi=False`:
    `SSD_Head(k, -3.)` (16 anchors for k=1). Input `[B, 3, H, W]` normalised images; output
    `[class_logits [B, A, num_classes + 1], box_activations [B, A, 4]]`.
    """

    def __init__(self, num_classes=20, k=9, multi=True, bias=None, drop=None):
        super().__init__()
        self.num_classes, self.k, self.multi = num_classes, k, multi
        self.body = resnet34_body()
        if multi:
            self.head = SSD_MultiHead(k, -4.0 if bias is None else bias, num_classes, 0.4 if drop is None else drop)
        else:
            self.head = SSD_Head(k, -3.0 if bias is None else bias, num_classes, 0.25 if drop is None else drop)

    def forward(self, x):
        return self.head(self.body(x))


def to_y_pred(outputs):
    """The lesson's `[class_logits, box_activations]` → ssd_keras `y_pred` `[B, A, 4 + C + 1]`."""
    clas, bbox = outputs
    return torch.cat([bbox, clas], dim=-1)


def normalize_images(images_0_255_nhwc):
    """0–255 RGB `[B, H, W, 3]` (numpy or tensor) → ImageNet-normalised NCHW float32 tensor."""
    x = torch.as_tensor(np.asarray(images_0_255_nhwc, dtype=np.float32)) / 255.0
    x = (x - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    return x.permute(0, 3, 1, 2).contiguous()


def count_flops(num_classes=20, k=9, multi=True, image_size=224) -> dict:
    """Analytic forward FLOPs (2 × multiply-adds) of the convolutions of `LessonSSD` per image.

    Counts only conv layers (>99 % of the work); BN, ReLU, pooling and additions are left out.
    A training step costs about 3× forward (forward + grad w.r.t. inputs + grad w.r.t. weights).
    The unused `out0` is not counted since the forward never runs it.
    """
    model = LessonSSD(num_classes, k, multi)
    total = 0
    hooks = []

    def hook(mod, inp, out):
        nonlocal total
        cin = mod.in_channels // mod.groups
        kh, kw = mod.kernel_size
        total += 2 * out.numel() // out.shape[0] * cin * kh * kw

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(hook))
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, image_size, image_size))
    for h in hooks:
        h.remove()
    return {"forward_flops_per_image": int(total), "train_flops_per_image": int(3 * total)}


# --------------------------------------------------------------------------------------------
# Weight transfer to the Keras model
# --------------------------------------------------------------------------------------------


def _np(t):
    return t.detach().cpu().numpy()


def _oihw_to_hwio(t):
    return _np(t).transpose(2, 3, 1, 0)


def _copy_head(torch_head: nn.Module, keras_head) -> list[str]:
    """Copy `SSD_Head` / `SSD_MultiHead` weights into ssd_keras's `SSDHead` / `SSDMultiHead`.

    Layers are matched by the lesson's attribute names (`sconv0`, `sconv1`, ..., `out1`, ...;
    the Keras head exposes them through `lesson_layers()`); the lesson's unused `out0` has no
    Keras counterpart and is skipped. Returns the names copied.
    """
    keras_layers = keras_head.lesson_layers()
    torch_layers = {
        name: m for name, m in torch_head.named_children() if isinstance(m, (StdConv, OutConv))
    }
    if isinstance(torch_head, SSD_MultiHead):
        torch_layers.pop("out0")  # created but never called in the lesson
    if set(keras_layers) != set(torch_layers):
        raise ValueError(
            "copy_weights_to_keras: head layers differ: torch has "
            f"{sorted(torch_layers)}, Keras has {sorted(keras_layers)} (same num_classes, k, "
            "grids and single/multi head?)"
        )
    for name, tm in torch_layers.items():
        km = keras_layers[name]
        if isinstance(tm, StdConv):
            pairs = [
                (km.conv, [_oihw_to_hwio(tm.conv.weight), _np(tm.conv.bias)]),
                (km.bn, [_np(tm.bn.weight), _np(tm.bn.bias), _np(tm.bn.running_mean), _np(tm.bn.running_var)]),
            ]
        else:
            pairs = [
                (km.oconv1, [_oihw_to_hwio(tm.oconv1.weight), _np(tm.oconv1.bias)]),
                (km.oconv2, [_oihw_to_hwio(tm.oconv2.weight), _np(tm.oconv2.bias)]),
            ]
        for layer, values in pairs:
            expected = [tuple(w.shape) for w in layer.weights]
            if expected != [v.shape for v in values]:
                raise ValueError(
                    f"copy_weights_to_keras: head.{name}.{layer.name} has weight shapes {expected}, "
                    f"the torch model gives {[v.shape for v in values]}"
                )
            layer.set_weights(values)
    return sorted(torch_layers)


def copy_weights_to_keras(torch_model: LessonSSD, keras_model):
    """Copy all weights of `torch_model` (body and head) into a `build_ssd(...)` Keras model.

    The Keras model must be `build_ssd(num_classes, anchors, backbone="resnet34", head=...)`
    with the same `num_classes`, `k` and head type. The body goes through
    `ssd_keras.backbones.load_torchvision_resnet34` (layer `"backbone"`), the head layers are
    matched by the lesson's names (layer `"head"`). BatchNorm running statistics are copied,
    so the two models agree in inference mode (`torch_model.eval()`, `training=False`).
    Returns `keras_model`.
    """
    from ssd_keras.backbones import load_torchvision_resnet34

    try:
        backbone, head = keras_model.get_layer("backbone"), keras_model.get_layer("head")
    except ValueError as e:
        raise ValueError(
            f"copy_weights_to_keras: {keras_model.name!r} is not a build_ssd model with layers "
            "'backbone' and 'head'"
        ) from e
    load_torchvision_resnet34(backbone, torch_model.body.state_dict())
    _copy_head(torch_model.head, head)
    return keras_model
