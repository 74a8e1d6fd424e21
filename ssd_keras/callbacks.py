"""Keras callbacks for detection training: `val_map` (VOC mAP every epoch), `NaNGuard`, and the
set a training run wants (`default_callbacks`: resume, checkpoints, TensorBoard)."""

from __future__ import annotations

import os
import warnings

import keras
import numpy as np

from ssd_keras.evaluation import evaluate_model

__all__ = ["MeanAveragePrecisionCallback", "NaNGuard", "default_callbacks"]


class MeanAveragePrecisionCallback(keras.callbacks.Callback):
    """Computes VOC mAP on a validation set every `every` epochs and logs it as `val_map`.

    The value is written into the epoch's `logs`, so it shows in the progress bar, in
    `History` and in TensorBoard/ModelCheckpoint placed after this callback in the list (they
    can `monitor="val_map"`, `mode="max"`).

    Args:
        dataset: a `tf.data.Dataset` (or iterable) of `(images, y_true)` batches with y_true
            `[batch, max_boxes, 5]` (relative yxyx + class, padding class -1), or of
            `(images, y_true, difficult)` with difficult bool `[batch, max_boxes]`.
        anchors: the model's `AnchorConfig` (None for an `SSDDetector`: its own).
        num_classes: number of object classes (None for an `SSDDetector`).
        every: run every N epochs (and never on other epochs; the key is absent then).
        decode_kwargs: override the decoder settings (score_threshold, iou_threshold,
            max_detections); by default a detector's own, else `decode_detections`' defaults
            (`EVAL_SCORE_THRESHOLD`: mAP needs the low-scoring boxes).
        difficult: optional list of per-image bool arrays (non-padding rows, dataset order),
            used when the dataset does not carry a difficult flag.
        iou_threshold, use_07_metric: as in `evaluate_detections`.
        name: the log key.
    """

    def __init__(
        self,
        dataset,
        anchors=None,
        num_classes=None,
        every=1,
        decode_kwargs=None,
        difficult=None,
        iou_threshold=0.5,
        use_07_metric=True,
        name="val_map",
        verbose=0,
    ):
        super().__init__()
        if int(every) < 1:
            raise ValueError(f"MeanAveragePrecisionCallback: every must be >= 1, got {every}")
        self.dataset = dataset
        self.anchors = anchors
        self.num_classes = None if num_classes is None else int(num_classes)
        self.every = int(every)
        self.decode_kwargs = dict(decode_kwargs or {})
        self.difficult = difficult
        self.iou_threshold = iou_threshold
        self.use_07_metric = use_07_metric
        self.name = name
        self.verbose = verbose
        self.history = []  # (epoch, result dict)

    def evaluate(self, model=None):
        """Run the model over the data set and return `evaluate_detections`' dict."""
        return evaluate_model(
            model or self.model, self.dataset, self.anchors, self.num_classes,
            difficult=self.difficult, iou_threshold=self.iou_threshold,
            use_07_metric=self.use_07_metric, **self.decode_kwargs,
        )

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        result = self.evaluate()
        self.history.append((epoch, result))
        if logs is not None:
            logs[self.name] = result["map"]
        if self.verbose:
            print(f"Epoch {epoch + 1}: {self.name} = {result['map']:.4f}")


class NaNGuard(keras.callbacks.TerminateOnNaN):
    """Stops training on a NaN/inf loss with a message that says what to try.

    `raise_error=True` raises a `RuntimeError` with the same message instead (it then
    keeps `BackupAndRestore`'s last good backup, since `on_train_end` does not run).
    `stopped_at` is `(epoch, batch)` when it fired.
    """

    def __init__(self, raise_error=False):
        super().__init__(raise_error=raise_error)
        self.stopped_at = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or np.isfinite(loss):
            return
        self.stopped_at = (self._epoch, batch)
        msg = (
            f"NaNGuard: loss became {loss} at epoch {self._epoch + 1}, batch {batch}; training "
            "stopped. Try: a lower learning rate (run lr_find and take a value well below the "
            "minimum), check the targets (relative yxyx boxes in [0, 1], ymax > ymin, class "
            "ids in [0, num_classes) and -1 padding), and that images are 0-255 floats."
        )
        if self.raise_error:
            raise RuntimeError(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
        self.model.stop_training = True


def default_callbacks(out_dir, monitor="val_loss", mode="auto", backup=True, checkpoint=True,
                      tensorboard=True, nan_guard=True, map_callback=None):
    """The callbacks a training script wants, writing under `out_dir`:

    `map_callback` (first, so the others see `val_map`), `NaNGuard`, `BackupAndRestore`
    (`out_dir/backup`: re-running the same script after a kill resumes from the last finished
    epoch, optimizer state and LR schedule position included), `ModelCheckpoint`
    (`out_dir/last.keras` every epoch, `out_dir/best.keras` on `monitor`), `TensorBoard`
    (`out_dir/logs`).
    """
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    cbs = []
    if map_callback is not None:
        cbs.append(map_callback)
    if nan_guard:
        cbs.append(NaNGuard())
    if backup:
        cbs.append(keras.callbacks.BackupAndRestore(os.path.join(out_dir, "backup")))
    if checkpoint:
        cbs.append(keras.callbacks.ModelCheckpoint(os.path.join(out_dir, "last.keras")))
        if monitor:
            cbs.append(keras.callbacks.ModelCheckpoint(
                os.path.join(out_dir, "best.keras"), monitor=monitor, mode=mode,
                save_best_only=True))
    if tensorboard:
        try:
            import tensorboard  # noqa: F401  (tf.summary needs it; TF does not depend on it)
        except ImportError:
            warnings.warn("default_callbacks: tensorboard is not installed; no TensorBoard "
                          "logs (pip install tensorboard)", stacklevel=2)
        else:
            cbs.append(keras.callbacks.TensorBoard(os.path.join(out_dir, "logs")))
    return cbs
