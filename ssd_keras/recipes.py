"""The recipes as library calls (the CLI's `train` and `demo` are thin wrappers of these).

* `lesson_stages` + `fit_lesson_recipe`: the lesson's training. With a pretrained body, two
  stages: the head alone with the body frozen (`learn.fit(lr, 1, cycle_len=5, use_clr=(20, 10))`),
  then `learn.freeze_to(-2)` (upper body + head) with the differential rates
  `lrs = [lr/100, lr/10, lr]` divided as the lesson does (`lrs/4`, `cycle_len=10`,
  `use_clr=(20, 10)` with focal loss; `lrs/2`, `cycle_len=4`, `use_clr=(20, 8)` with BCE).
  From scratch, one stage with every layer trainable. Validation every epoch (`val_loss`,
  `val_loc`, `val_clas`, `val_map`), `best.keras` by `val_map`, a CSV log and TensorBoard per
  stage, and `resume` after an interruption.
* `run_demo`: the CPU demo on generated `shapes`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import keras

from ssd_keras.callbacks import MeanAveragePrecisionCallback
from ssd_keras.data.augment import augmentations_by_name
from ssd_keras.data.pipeline import make_dataset
from ssd_keras.distribute import worker_index
from ssd_keras.evaluation import evaluate_model
from ssd_keras.optimizers import freeze_to, unfreeze
from ssd_keras.training import fit_one_cycle

__all__ = ["Stage", "lesson_stages", "fit_lesson_recipe", "run_demo", "metrics_summary"]


@dataclasses.dataclass
class Stage:
    """One `fit_one_cycle` call of a recipe.

    `freeze`: None (every layer trainable) or fastai's `freeze_to(n)` argument over
    `layer_groups` (`[early body, late body, head]`); `group_multipliers`: per-group LR
    factors (the lesson's `lrs / lr`), or None for one rate.
    """

    name: str
    epochs: int
    max_lr: float
    div: float = 20.0
    cut_div: float = 10.0
    freeze: int | None = None
    group_multipliers: tuple | None = None

    def describe(self):
        if self.group_multipliers:
            lrs = ", ".join(f"{self.max_lr * m:.3g}" for m in self.group_multipliers)
            rate = f"learning rates [{lrs}] (early body, upper body, head)"
        else:
            rate = f"learning rate {self.max_lr:.3g}"
        return (f"{self.name}: {self.epochs} epoch(s), one-cycle to {rate}, "
                f"use_clr=({self.div:g}, {self.cut_div:g})")


def lesson_stages(lr=3e-3, pretrained=True, focal=True, stage1_epochs=5, stage2_epochs=None,
                  stage2_divisor=None, group_multipliers=(0.01, 0.1, 1.0), stage1_clr=(20.0, 10.0),
                  stage2_clr=None, epochs=None):
    """The lesson's stages (see the module docstring); defaults are the lesson's values.

    Args:
        lr: the lesson's `lr` (its notebook: 3e-3).
        pretrained: two stages (frozen body, then `freeze_to(-2)` with `lrs`); False: one
            stage from scratch, all layers, `epochs` long.
        focal: focal loss (`lrs/4`, 10 epochs, `use_clr=(20, 10)`) or BCE (`lrs/2`, 4 epochs,
            `use_clr=(20, 8)`) for stage 2's defaults.
        stage2_divisor: the lesson's `lrs / d`.
        epochs: the from-scratch stage's length (default `stage1_epochs + stage2_epochs`).
    """
    if stage2_epochs is None:
        stage2_epochs = 10 if focal else 4
    if stage2_divisor is None:
        stage2_divisor = 4.0 if focal else 2.0
    if stage2_clr is None:
        stage2_clr = (20.0, 10.0) if focal else (20.0, 8.0)
    if not pretrained:
        return [Stage("from scratch, all layers trainable", int(epochs or stage1_epochs + stage2_epochs),
                      lr, *stage1_clr)]
    return [
        Stage("stage 1/2, head only (body frozen)", int(stage1_epochs), lr, *stage1_clr, freeze=-1),
        Stage("stage 2/2, freeze_to(-2): upper body + head", int(stage2_epochs), lr / stage2_divisor,
              *stage2_clr, freeze=-2, group_multipliers=tuple(group_multipliers)),
    ]


def fit_lesson_recipe(detector, train_ds, stages, val_ds=None, val_ground_truths=None, out_dir=None,
                      resume=False, verbose="auto", jit_compile="auto", log=print, callbacks=None):
    """Train `detector` through `stages` (from `lesson_stages`); returns the Keras histories.

    With `val_ds` (`(images, y_true)` batches in a fixed order; `val_ground_truths` their
    per-image ground truth with difficult flags), every epoch logs `val_loss`, `val_loc`,
    `val_clas` and the VOC07 `val_map`. With `out_dir`: `best.keras` (highest `val_map`, else
    lowest `val_loss` / `loss`, over all stages), `last.keras`, and per stage
    `stageN/log.csv`, TensorBoard logs in `stageN/logs` and a `BackupAndRestore` folder; a
    finished stage leaves `stageN/done.weights.h5`, so `resume=True` skips it and continues
    the interrupted one from its backup.

    Under a multi-worker `MultiWorkerMirroredStrategy` (create and compile the detector in its
    scope) every worker runs this same call with the same `out_dir`: each keeps its backup and
    done marker in `stageN/worker<index>/`, and only the chief (worker 0) writes the shared
    files (`best.keras`, `last.keras`, the CSV and TensorBoard logs).

    `log` gets one line as each stage starts (`"<name>: starting"`) or is skipped as done; print
    `stage.describe()` of each stage beforehand for the plan (epochs, learning rates), as the
    command line's `train` does.
    """
    out = None if out_dir is None else Path(out_dir)
    worker = worker_index(detector.distribute_strategy)
    chief = worker in (None, 0)
    map_cb = None
    if val_ds is not None:
        map_cb = MeanAveragePrecisionCallback(val_ds, difficult=None if val_ground_truths is None
                                              else [g[2] for g in val_ground_truths])
    monitor, mode = ("val_map", "max") if map_cb else (("val_loss", "min") if val_ds is not None
                                                       else ("loss", "min"))
    best = None
    if out is not None and chief:
        out.mkdir(parents=True, exist_ok=True)
        # One instance for all stages, so "best" is the best of the whole run.
        best = keras.callbacks.ModelCheckpoint(str(out / "best.keras"), monitor=monitor, mode=mode,
                                               save_best_only=True)
    histories = []
    for i, stage in enumerate(stages, 1):
        stage_dir = None if out is None else out / f"stage{i}"
        # This worker's own files (one worker: the stage folder itself).
        own_dir = stage_dir if stage_dir is None or worker is None else stage_dir / f"worker{worker}"
        done = None if own_dir is None else own_dir / "done.weights.h5"
        if resume and done is not None and done.is_file():
            detector.load_weights(str(done))
            log(f"{stage.name}: already done, weights from {done}")
            continue
        # The name only: callers print the plan (`describe()` of every stage) before training, and
        # the details again here were the same lines twice (the CLI, examples/voc_lesson.py).
        log(f"{stage.name}: starting")
        if stage.freeze is None:
            unfreeze(detector)
        else:
            freeze_to(detector, stage.freeze)
        cbs = list(callbacks or [])
        if stage_dir is not None:
            own_dir.mkdir(parents=True, exist_ok=True)
            cbs.append(keras.callbacks.BackupAndRestore(str(own_dir / "backup")))
            if chief:
                cbs += [keras.callbacks.ModelCheckpoint(str(out / "last.keras")), best,
                        keras.callbacks.CSVLogger(str(stage_dir / "log.csv")),
                        keras.callbacks.TensorBoard(str(stage_dir / "logs"))]
        histories.append(fit_one_cycle(
            detector, train_ds, stage.epochs, stage.max_lr, stage.div, stage.cut_div, val_ds=val_ds,
            group_multipliers=stage.group_multipliers, map_callback=map_cb, callbacks=cbs,
            verbose=verbose, jit_compile=jit_compile))
        if done is not None:
            detector.save_weights(str(done))
    unfreeze(detector)
    return histories


def metrics_summary(result, class_names, **extra):
    """`evaluate_detections`' result as JSON-able `{"map", "ap": {class: AP or None}, ...extra}`."""
    ap = [None if v != v else float(v) for v in result["ap"]]
    return dict(extra, map=float(result["map"]), ap=dict(zip(class_names, ap)))


def run_demo(out_dir, epochs=None, train_images=None, val_images=None, batch_size=None, lr=None,
             augment=None, seed=0, shapes=None, detector_overrides=None, verbose="auto", log=print,
             jit_compile="auto", detector=None):
    """`python -m ssd_keras demo`: train the `demo_tiny64` preset from scratch on generated
    `shapes`, evaluate on held-out images, save `model.keras`, `detections.png`, `metrics.json`.

    Settings left as None take the preset's recipe (`get_preset("demo_tiny64")["recipe"]`).
    `detector`: an untrained `SSDDetector` to train instead of
    `SSDDetector.from_preset("demo_tiny64", **detector_overrides)` (the CLI builds it first, so
    that a bad setting is a usage error before any work). The seed is set before the detector
    is built here and again before the data, so a detector built right after
    `keras.utils.set_random_seed(seed)` trains exactly as the one built here.
    Returns a dict: `result` (`evaluate_detections`' dict), `detector`, `paths`, `seconds`.
    """
    from ssd_keras.data.shapes import ShapesData
    from ssd_keras.detector import SSDDetector
    from ssd_keras.presets import get_preset
    from ssd_keras.viz import save_detection_grid

    start = time.time()
    recipe = get_preset("demo_tiny64")["recipe"]
    epochs = recipe["epochs"] if epochs is None else epochs
    train_images = recipe["train_images"] if train_images is None else train_images
    val_images = recipe["val_images"] if val_images is None else val_images
    batch_size = recipe["batch_size"] if batch_size is None else batch_size
    lr = recipe["lr"] if lr is None else lr
    augment = recipe["augment"] if augment is None else augment
    shapes = {**{k: v for k, v in recipe["shapes"].items() if k != "seed"}, **(shapes or {})}
    if detector is None:
        keras.utils.set_random_seed(seed)
        detector = SSDDetector.from_preset("demo_tiny64", **(detector_overrides or {}))
    elif detector_overrides:
        raise ValueError("run_demo: pass detector or detector_overrides, not both")
    keras.utils.set_random_seed(seed)  # again: the data order and flips do not depend on who built it
    size = detector.image_size
    settings = dict(image_size=size, seed=seed, **shapes)
    # Generated inside tf.data while the model trains (first batch at once); kept after the first
    # epoch, since the demo's 24000 images at 64 px are 295 MB and making them again every epoch
    # would add about half the training step's CPU (~0.75 against ~1.4 ms per image).
    train = ShapesData(train_images, split="train", keep=True, **settings)
    val = ShapesData(val_images, split="val", keep=True, **settings)
    detector.metadata.update({"data": "shapes", "shapes": dict(shapes, seed=seed),
                              "split": {"data": "shapes", "train_split": "train",
                                        "val": {"kind": "split", "split": "val", "count": len(val)}}})
    train_ds = make_dataset(train, size, batch_size, augment=augmentations_by_name(augment),
                            shuffle=True, seed=seed)
    val_ds = make_dataset(val, size, batch_size)
    a = detector.anchors
    log(f"demo: {detector.backbone_name} body at {size} px, {a.num_anchors} anchors (grids {a.grids}, "
        f"k={a.k}), {detector.num_classes} classes, {len(train)} training / {len(val)} held-out images, "
        f"{epochs} epochs, batch {batch_size}, lr {lr}, loss {detector.loss_settings}, augmentation: {augment}")
    fit_one_cycle(detector, train_ds, epochs, lr, verbose=verbose, jit_compile=jit_compile)
    train_seconds = time.time() - start
    result = evaluate_model(detector, val_ds, ground_truths=val.ground_truths())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_path = out / "model.keras"
    detector.save(model_path)
    images, y_true = next(iter(val_ds))
    picture = save_detection_grid(detector, images[:4], y_true[:4], out / "detections.png")
    seconds = time.time() - start
    metrics = metrics_summary(
        result, detector.class_names, command="demo", epochs=epochs, train_images=len(train),
        val_images=len(val), batch_size=batch_size, lr=lr, augment=augment, seed=seed,
        **shapes, **detector.loss_settings, head_filters=detector.head_filters,
        anchors=detector.anchors.get_config(),
        train_seconds=round(train_seconds, 1), total_seconds=round(seconds, 1))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return {"result": result, "detector": detector, "seconds": seconds, "train_seconds": train_seconds,
            "paths": {"model": model_path, "picture": picture, "metrics": out / "metrics.json"}}
