"""`build_ssd`: body + the lesson's head as one functional Keras model (the raw model under
`ssd_keras.SSDDetector`, which adds the anchors, class names, loss and decoder).

The lesson builds `ConvnetBuilder(f_model, 0, 0, 0, custom_head=head)`: a ResNet34 body cut
before the pooling layer with `SSD_Head` or `SSD_MultiHead` on its 7×7 map. Here:

    images [B, S, S, 3] (0–255 RGB) → backbone (normalisation inside) → head → y_pred

`y_pred` is `[B, A, 4 + C + 1]` float32 (box activations, class logits, background last).
"""

from __future__ import annotations

import keras

from ssd_keras._checks import is_whole
from ssd_keras.anchors import AnchorConfig
from ssd_keras.backbones import get_backbone
from ssd_keras.layers import SSDHead, SSDMultiHead, plan_head


def build_ssd(
    num_classes,
    anchors=None,
    backbone="resnet34",
    weights=None,
    image_size=224,
    head=None,
    bias=None,
    dropout=None,
    head_filters=256,
    name="ssd",
    conv_dropout=None,
):
    """The lesson's SSD model: images → `y_pred`.

    Args:
        num_classes: object classes `C` (without background).
        anchors: `AnchorConfig` (default: the lesson's 4×4, 2×2, 1×1 grids, k = 9, 189 anchors).
        backbone: a `get_backbone` name ("resnet34", "resnet50", "mobilenetv2", "tiny",
            "tiny8") or a `keras.Model` taking 0–255 images of shape `[S, S, 3]` (normalising
            them itself) to one feature map.
        weights: for the body: None, "imagenet", or a local file (a body `.weights.h5`, a
            torchvision `.pth` for resnet34). A `.weights.h5` saved from a whole `build_ssd`
            model with the same arguments is loaded into the whole model instead.
        image_size: side `S` of the square input images. The body's map must halve (ceil) onto
            `anchors.grids` (ResNet34: 224 → 7 → 4, 2, 1); otherwise a ValueError says so.
        head: "multi" (`SSDMultiHead`), "single" (`SSDHead`, one grid) or None: single when
            `anchors` has one grid, else multi.
        bias: class-logit bias init of the `OutConv`s (default: lesson's -3 single, -4 multi).
        dropout: head dropout (default: lesson's 0.25 single, 0.4 multi).
        conv_dropout: the single head's `StdConv` dropout (the lesson's 0.1 by default). The
            multi head uses `dropout` in its `StdConv`s too, as the lesson does; a different
            `conv_dropout` with it is a ValueError.
        head_filters: channels of the head's `StdConv`s (lesson: 256); the CPU demo uses
            fewer, which makes its training step ~20% faster.
    Returns:
        a functional `keras.Model` with layers "backbone", "head" and "y_pred" (a float32 cast,
        so the output is float32 under a mixed-precision policy). Compile it with
        `SSDLoss(anchors, num_classes)`.
    """
    # Checked before int() would cut 2.5 classes to 2 or a 224.7 px image to 224 without a word.
    for arg, value in (("num_classes", num_classes), ("image_size", image_size), ("head_filters", head_filters)):
        if not (is_whole(value) and value >= 1):
            raise ValueError(f"build_ssd: {arg} must be a positive integer, got {value!r}")
    num_classes, image_size, head_filters = int(num_classes), int(image_size), int(head_filters)
    anchors = AnchorConfig.coerce(anchors)
    if head is None:
        head = "single" if len(anchors.grids) == 1 else "multi"
    if head not in ("single", "multi"):
        raise ValueError(f"build_ssd: head must be 'single', 'multi' or None, got {head!r}")

    local_model_weights = None
    if isinstance(backbone, keras.Model):
        if weights is not None:
            raise ValueError("build_ssd: pass weights=None with a backbone model (load its weights yourself)")
        if tuple(backbone.inputs[0].shape[1:]) != (image_size, image_size, 3):
            raise ValueError(
                f"build_ssd: the backbone model takes {tuple(backbone.inputs[0].shape[1:])} "
                f"images but image_size={image_size}"
            )
        # layer_groups finds the body by this name; a functional re-wrap shares the layers.
        if len(backbone.outputs) != 1:
            raise ValueError(f"build_ssd: the backbone model must have one output, it has {len(backbone.outputs)}")
        body = backbone if backbone.name == "backbone" else keras.Model(
            backbone.inputs, backbone.outputs[0], name="backbone"
        )
    else:
        body_weights = weights
        if isinstance(weights, str) and weights.endswith(".weights.h5") and _is_whole_model_file(weights):
            body_weights, local_model_weights = None, weights
        body = get_backbone(backbone, weights=body_weights, input_shape=(image_size, image_size, 3))

    feature_shape = body.outputs[0].shape
    # Check here too so that the message can name the image size and the body.
    plan_head(
        feature_shape[1],
        anchors.grids,
        image_size=image_size,
        where=f"build_ssd(backbone={backbone if isinstance(backbone, str) else body.name!r})",
    )

    if head == "single":
        head_layer = SSDHead(
            num_classes, anchors, bias=-3.0 if bias is None else bias,
            dropout=0.25 if dropout is None else dropout,
            conv_dropout=0.1 if conv_dropout is None else conv_dropout, filters=head_filters, name="head",
        )
    else:
        if conv_dropout is not None and conv_dropout != (0.4 if dropout is None else dropout):
            raise ValueError(f"build_ssd: the multi head's StdConvs use dropout={dropout} (as the lesson's); "
                             f"conv_dropout={conv_dropout} applies to head='single' only")
        head_layer = SSDMultiHead(
            num_classes, anchors, bias=-4.0 if bias is None else bias,
            dropout=0.4 if dropout is None else dropout, filters=head_filters, name="head",
        )

    images = keras.Input((image_size, image_size, 3), name="images")
    y = head_layer(body(images))
    # Cast to float32 last so that losses and decoding see float32 under mixed precision.
    y_pred = keras.layers.Activation("linear", dtype="float32", name="y_pred")(y)
    model = keras.Model(images, y_pred, name=name)
    if local_model_weights is not None:
        model.load_weights(local_model_weights)
    return model


def _is_whole_model_file(path):
    """True when a `.weights.h5` file was saved from a `build_ssd` model (it holds a head).

    Keras 3 weight files key layers by class-derived names (`layers/ssd_multi_head/...`),
    not by layer names, so look for the head classes' keys.
    """
    import h5py

    try:
        with h5py.File(path, "r") as f:
            keys = set(f["layers"].keys()) if "layers" in f else set()
    except OSError as e:
        raise ValueError(f"build_ssd: could not read weights file {path!r}: {e}") from e
    return bool(keys & {"ssd_multi_head", "ssd_head"})
