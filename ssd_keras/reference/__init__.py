"""The lesson's PyTorch code, transcribed: the independent reference ssd_keras is tested against.

* `ssd_keras.reference.lesson`: anchors, `hw2corners`, `jaccard`, `actn_to_bb`,
  `map_to_ground_truth`, `BCE_Loss`, `FocalLoss`, `ssd_1_loss`, `ssd_loss`.
* `ssd_keras.reference.lesson_model`: a torchvision-named ResNet34 body and the lesson's
  `StdConv`, `OutConv`, `SSD_Head`, `SSD_MultiHead` (`LessonSSD`), plus the weight copy into Keras.
* `ssd_keras.reference.parity`: `train_side_by_side`, the lesson's model and its Keras conversion
  trained side by side (same weights, batches, optimizer), their loss curves and weights compared.

These modules import PyTorch, which ssd_keras itself does not need: install it with
`pip install "ssd_keras[reference]"` (or `pip install torch`; on a CPU-only machine the CPU wheel
index keeps the download small). `import ssd_keras` never imports this package.
"""

try:
    import torch  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "ssd_keras.reference is the lesson's PyTorch code and needs torch: "
        "pip install 'ssd_keras[reference]' (or pip install torch)"
    ) from e
