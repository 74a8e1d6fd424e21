"""The lesson's PyTorch SSD → a Keras `build_ssd` model with the same weights and outputs.

`convert_lesson_model` takes the lesson's model (`LessonSSD`: ResNet34 body + `SSD_Head` or
`SSD_MultiHead`) as a live `torch.nn.Module`, an in-memory state dict, or a state-dict file:

* `.safetensors` — read with the `safetensors` package, **no torch needed**;
* `.pth` / `.pt` — a `torch.save`d state dict, needs torch.

Keys may be `LessonSSD`'s (`body.conv1.weight`, ..., `head.sconv0.conv.weight`,
`head.out1.oconv1.weight`, ...) or fastai 0.7's `ConvnetBuilder` layout, which the lesson's
`learn.save` wrote (the body's children by index `0.`, `1.`, `4.`–`7.`, the custom head as
`8.`). The head type, `k` and the number of classes are read from the weights' shapes and
checked against the arguments, so a mismatch is an error naming the key rather than a
silently wrong model. torch is imported only inside functions, so this module imports
without it.
"""

from __future__ import annotations

import os

from ssd_keras.anchors import AnchorConfig
from ssd_keras.backbones import copy_torch_state, read_state_dict
from ssd_keras.layers import OutConv, StdConv

# fastai 0.7 ConvnetBuilder: nn.Sequential(*resnet34.children()[:8], custom_head), so the
# body's conv1, bn1, relu, maxpool, layer1..4 are 0..7 and the head is 8.
_FASTAI_PREFIXES = {
    "0": "body.conv1", "1": "body.bn1", "4": "body.layer1", "5": "body.layer2",
    "6": "body.layer3", "7": "body.layer4", "8": "head",
}


def lesson_state_dict(source):
    """`source` (a `LessonSSD`, a state dict or a file path) → state dict with LessonSSD keys.

    Values are numpy arrays or torch tensors (both are accepted by the copy).
    """
    if hasattr(source, "state_dict") and callable(source.state_dict):  # a torch module
        state = dict(source.state_dict())
    elif isinstance(source, dict):
        state = dict(source)
    elif isinstance(source, (str, os.PathLike)):
        state = read_state_dict(source)
    else:
        raise TypeError(
            "convert_lesson_model: expected a LessonSSD module, a state dict or a .safetensors / "
            f".pth file path, got {type(source).__name__}"
        )
    first = {k.split(".", 1)[0] for k in state}
    if first and first <= set(_FASTAI_PREFIXES) | {"2", "3"}:  # fastai layout (2, 3: relu, maxpool)
        state = {_FASTAI_PREFIXES[k.split(".", 1)[0]] + "." + k.split(".", 1)[1]: v for k, v in state.items()}
    return state


def _shape(value):
    return tuple(int(s) for s in value.shape)


def _read_head(state):
    """(head type, k, num_classes, filters) from the head's weight shapes."""
    if "head.out.oconv1.weight" in state:
        head, out = "single", "head.out"
    elif "head.out1.oconv1.weight" in state:
        head, out = "multi", "head.out1"
    else:
        raise ValueError(
            "convert_lesson_model: not the lesson's SSD: no 'head.out.oconv1.weight' (SSD_Head) or "
            f"'head.out1.oconv1.weight' (SSD_MultiHead) key; keys start {sorted(state)[:5]}"
        )
    for key in (f"{out}.oconv2.weight", "head.sconv0.conv.weight"):
        if key not in state:
            raise ValueError(f"convert_lesson_model: the state dict has no {key!r}")
    boxes, classes = _shape(state[f"{out}.oconv2.weight"]), _shape(state[f"{out}.oconv1.weight"])
    k = boxes[0] // 4
    if boxes[0] % 4 or classes[0] % k:
        raise ValueError(
            f"convert_lesson_model: {out}.oconv2.weight has {boxes[0]} rows (4 * k) and "
            f"{out}.oconv1.weight {classes[0]} ((num_classes + 1) * k): inconsistent"
        )
    return head, k, classes[0] // k - 1, _shape(state["head.sconv0.conv.weight"])[0], out


def convert_lesson_model(
    torch_model_or_state_dict_path,
    num_classes=None,
    anchors=None,
    image_size=224,
    dropout=None,
    name="ssd",
):
    """The lesson's SSD (PyTorch) as a Keras `build_ssd(..., backbone="resnet34")` model.

    Args:
        torch_model_or_state_dict_path: a `LessonSSD` (or any module with its state-dict
            keys), a state dict, or a `.safetensors` (no torch needed) / `.pth` / `.pt` file.
        num_classes: object classes `C` without background; None reads it from the weights
            (`(C + 1) * k` class channels). Given, it must match them.
        anchors: the `AnchorConfig` the torch model was trained with; its `k` and number of
            grids must match the head. Default: the lesson's (`AnchorConfig()`, 4×4, 2×2, 1×1,
            k = 9, for `SSD_MultiHead`; `AnchorConfig.single_grid(4)` for `SSD_Head`).
        image_size: input side (the lesson's 224: ResNet34's 7×7 map halves onto 4, 2, 1).
        dropout: head dropout for further training; default the module's own (`head.drop.p`)
            when given a module, else the lesson's (0.4 multi, 0.25 single). A module's
            `SSD_Head` StdConv dropout (`head.sconv0.drop.p`) is carried over as well.
        name: the Keras model's name.
    Returns:
        the Keras model, every weight (BatchNorm running statistics included) copied, so that
        `model(images_0_255, training=False)` equals `to_y_pred(torch_model.eval()(normalised))`.
        The lesson's unused `out0` (SSD_MultiHead) is dropped.
    """
    from ssd_keras.model import build_ssd  # model imports backbones; keep this module light

    source = torch_model_or_state_dict_path
    state = lesson_state_dict(source)
    head, k, classes, filters, out = _read_head(state)
    if num_classes is not None and int(num_classes) != classes:
        raise ValueError(
            f"convert_lesson_model: num_classes={num_classes}, but {out}.oconv1.weight has "
            f"{classes + 1} * {k} rows, i.e. {classes} classes (+ background) with k={k}"
        )
    if anchors is None:
        anchors = AnchorConfig() if head == "multi" else AnchorConfig.single_grid(4)
    anchors = AnchorConfig.coerce(anchors)
    if anchors.k != k:
        raise ValueError(
            f"convert_lesson_model: anchors.k={anchors.k}, but {out}.oconv2.weight has 4 * {k} rows "
            f"(k={k} anchors per cell); pass the AnchorConfig the torch model was trained with"
        )
    if head == "single" and len(anchors.grids) != 1:
        raise ValueError(f"convert_lesson_model: the torch model has SSD_Head (one grid), anchors.grids={anchors.grids}")
    module_head = getattr(source, "head", None)
    if dropout is None and hasattr(getattr(module_head, "drop", None), "p"):
        dropout = float(module_head.drop.p)
    conv_dropout = None
    if head == "single" and hasattr(getattr(getattr(module_head, "sconv0", None), "drop", None), "p"):
        conv_dropout = float(module_head.sconv0.drop.p)

    model = build_ssd(
        classes, anchors, backbone="resnet34", weights=None, image_size=image_size, head=head,
        dropout=dropout, head_filters=filters, name=name, conv_dropout=conv_dropout,
    )
    named = {f"body.{l.name.replace('_', '.')}": l for l in model.get_layer("backbone").layers if l.weights}
    for lesson_name, layer in model.get_layer("head").lesson_layers().items():
        if isinstance(layer, StdConv):
            named.update({f"head.{lesson_name}.conv": layer.conv, f"head.{lesson_name}.bn": layer.bn})
        elif isinstance(layer, OutConv):
            named.update({f"head.{lesson_name}.oconv1": layer.oconv1, f"head.{lesson_name}.oconv2": layer.oconv2})
    # SSD_MultiHead creates out0 but never calls it: no Keras counterpart.
    copy_torch_state(named, state, "convert_lesson_model", ignore=lambda key: key.startswith("head.out0."))
    return model
