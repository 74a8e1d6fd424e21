"""Fitting, the lesson's way: `fit_one_cycle` (`learn.fit(lr, 1, cycle_len, use_clr)`) and `lr_find`.

fastai 0.7 → ssd_keras:

* `learn.fit(lr, 1, cycle_len=n, use_clr=(div, cut_div))` → `fit_one_cycle(model, ds, n, lr,
  div, cut_div)`, on `ssd_keras.schedules.OneCycleSchedule` (fastai's `CircularLR`);
* `use_clr_beta`'s momentum cycle → `moms=(0.95, 0.85)` (`ssd_keras.schedules.MomentumCycle`);
* `learn.lr_find()` / `learn.sched.plot()` → `lr_find(model, ds)` → `LRFinderResult.plot()`;
* `learn.freeze_to(n)`, `lrs = np.array([lr/100, lr/10, lr])` → `ssd_keras.optimizers`
  (`freeze_to`, `group_multipliers=(1/100, 1/10, 1)`).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import numpy as np

from ssd_keras.callbacks import NaNGuard, default_callbacks
from ssd_keras.distribute import prepare_for_multi_worker
from ssd_keras.optimizers import _groups, discriminative_optimizer
from ssd_keras.schedules import MomentumCycle, OneCycleSchedule

__all__ = ["fit_one_cycle", "lr_find", "LRFinderResult"]


# --------------------------------------------------------------------------- fitting


def _steps_per_epoch(dataset, steps_per_epoch):
    if steps_per_epoch is not None:
        return int(steps_per_epoch)
    card = getattr(dataset, "cardinality", None)
    n = int(card()) if card is not None else -2
    if n < 0:
        raise ValueError(
            "steps_per_epoch: the data set's length is unknown or infinite; pass steps_per_epoch"
        )
    return n


def fit_one_cycle(model, train_ds, epochs, max_lr, div=20.0, cut_div=10.0, val_ds=None, *,
                  loss=None, optimizer="adam", groups=None, group_multipliers=None,
                  moms=None, steps_per_epoch=None, callbacks=None, out_dir=None,
                  map_callback=None, metrics=None, verbose="auto", jit_compile="auto",
                  **optimizer_kwargs):
    """The lesson's `learn.fit(lr, 1, cycle_len=epochs, use_clr=(div, cut_div))`.

    Compiles `model` (in its distribution strategy's scope) with a `Discriminative*` optimizer
    on `OneCycleSchedule(max_lr, epochs * steps_per_epoch, div, cut_div)` and fits.

    Args:
        model: an `SSDDetector` (its own `SSDLoss` by default; `loc` and `clas` are logged from
            the loss's one matching per step) or any Keras model with `loss=`.
        loss: the loss (e.g. `SSDLoss(anchors, num_classes)`); default: the model's compiled
            loss, or a detector's `default_loss()`. For other models its `metrics()`, when it
            has one (SSDLoss: `loc`, `clas`), are logged.
        optimizer: "adam" (the lesson's), "adamw", "sgd", "rmsprop" or an optimizer instance
            whose config to copy; extra keyword arguments go to it.
        groups, group_multipliers: layer-group learning rates, e.g. `group_multipliers=(1/100,
            1/10, 1)`; groups default to `layer_groups(model)`.
        moms: e.g. `(0.95, 0.85)` to cycle Adam's beta_1 (`use_clr_beta`); None keeps it.
        out_dir: when given, `default_callbacks(out_dir, ...)` are added (resume, checkpoints,
            TensorBoard); always a `NaNGuard`.
        map_callback: a `MeanAveragePrecisionCallback`; with `every=1`, `val_map` drives
            best.keras (else `val_loss`).
        callbacks: more callbacks, after those.
    Returns:
        the `History`.
    """
    steps = _steps_per_epoch(train_ds, steps_per_epoch)
    total = int(epochs) * steps
    schedule = OneCycleSchedule(max_lr, total, div, cut_div)
    is_detector = callable(getattr(model, "default_loss", None))
    loss = loss if loss is not None else getattr(model, "loss", None)
    if loss is None and is_detector:
        loss = model.default_loss()
    if loss is None:
        raise ValueError("fit_one_cycle: pass loss= (the model is not compiled with one)")
    if group_multipliers is not None and groups is None:
        groups = _groups(model, None)
    strategy = getattr(model, "distribute_strategy", None)
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        # In the scope: metric variables made outside it are not summed across workers.
        if metrics is None:
            # A detector logs loc/clas itself, from the loss's own matching.
            has_parts = callable(getattr(loss, "metrics", None)) and not is_detector
            metrics = loss.metrics() if has_parts else []
        opt = discriminative_optimizer(
            optimizer, learning_rate=schedule, groups=groups, group_multipliers=group_multipliers,
            momentum_schedule=None if moms is None else MomentumCycle(total, moms, cut_div),
            **optimizer_kwargs)
        model.compile(optimizer=opt, loss=loss, metrics=metrics, jit_compile=jit_compile)
    prepare_for_multi_worker(model)  # a no-op unless the strategy spans several workers
    cbs = []
    if out_dir is not None:
        # best.keras follows val_map when it is computed every epoch (ModelCheckpoint warns
        # on epochs without its key), else the validation (or training) loss.
        if map_callback is not None and getattr(map_callback, "every", 1) == 1:
            monitor = getattr(map_callback, "name", "val_map")
        else:
            monitor = "val_loss" if val_ds is not None else "loss"
        cbs += default_callbacks(out_dir, monitor=monitor, mode="min" if monitor.endswith("loss") else "max",
                                 map_callback=map_callback)
    else:
        cbs += ([map_callback] if map_callback is not None else []) + [NaNGuard()]
    cbs += list(callbacks or [])
    # A tf.data set shuffles itself (Keras would warn that shuffle=True is ignored).
    shuffle = not hasattr(train_ds, "as_numpy_iterator")
    return model.fit(train_ds, epochs=int(epochs), steps_per_epoch=steps_per_epoch,
                     validation_data=val_ds, callbacks=cbs, verbose=verbose, shuffle=shuffle)


# --------------------------------------------------------------------------- lr_find


@dataclass
class LRFinderResult:
    """`lr_find`'s record: `lrs`, smoothed `losses` (fastai's debiased moving average),
    `raw_losses`; `stopped_early` when the loss exploded."""

    lrs: np.ndarray
    losses: np.ndarray
    raw_losses: np.ndarray
    stopped_early: bool = False
    best_lr: float = field(default=float("nan"))

    def suggestion(self, skip_start=10, skip_end=5):
        """The LR where the smoothed loss falls fastest (steepest negative slope in log-LR);
        a starting point, to be checked on the plot (fastai advises ~10x below the minimum)."""
        lo, hi = skip_start, max(len(self.lrs) - skip_end, skip_start + 2)
        lrs, losses = self.lrs[lo:hi], self.losses[lo:hi]
        if len(lrs) < 3:
            return float("nan")
        return float(lrs[np.argmin(np.gradient(losses, np.log(lrs)))])

    def plot(self, skip_start=10, skip_end=5, ax=None):
        """Loss vs LR with a log x axis (fastai's `sched.plot()`); returns the Figure."""
        from matplotlib.figure import Figure

        if ax is None:
            fig = Figure(figsize=(6, 4))
            ax = fig.subplots()
        else:
            fig = ax.figure
        n = len(self.lrs)
        sl = slice(min(skip_start, max(n - 2, 0)), max(n - skip_end, min(skip_start, n - 2) + 2))
        ax.plot(self.lrs[sl], self.losses[sl])
        ax.set_xscale("log")
        ax.set(xlabel="learning rate (log scale)", ylabel="loss (smoothed)", title="lr_find")
        return fig


def lr_find(model, dataset, start_lr=1e-5, end_lr=10.0, num_steps=100, stop_factor=4.0,
            beta=0.98):
    """fastai's `learn.lr_find()`: train for up to `num_steps` batches with the LR growing
    exponentially from `start_lr` to `end_lr`, record the loss, then put everything back.

    The model must be compiled (its loss and optimizer class are used). The sweep runs on
    a copy of the optimizer (same class and settings, so layer-group multipliers apply), and
    stops when the smoothed loss exceeds `stop_factor` × the best seen (fastai: best taken
    after the first 10 batches) or is NaN. Afterwards the model's weights (BatchNorm
    statistics included) are set back exactly and the original optimizer and its state are
    untouched. `dataset` yields `(images, y_true)` batches; it is repeated if short.
    Returns an `LRFinderResult` (`.plot()` for the lesson's picture).
    """
    if getattr(model, "optimizer", None) is None or getattr(model, "loss", None) is None:
        raise ValueError("lr_find: compile the model first (its loss and optimizer are used)")
    if not 0 < start_lr < end_lr:
        raise ValueError(f"lr_find: need 0 < start_lr < end_lr, got {start_lr}, {end_lr}")
    if int(num_steps) < 2:
        raise ValueError(f"lr_find: num_steps must be >= 2, got {num_steps}")
    num_steps = int(num_steps)
    original = model.optimizer
    saved_weights = [np.array(w) for w in model.get_weights()]
    saved_opt = [np.array(v) for v in original.variables] if original.built else None
    config = original.get_config()
    config.pop("name", None)
    config["learning_rate"] = float(start_lr)
    strategy = getattr(model, "distribute_strategy", None)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        sweep_opt = type(original).from_config(config)
    lrs = start_lr * (end_lr / start_lr) ** (np.arange(num_steps) / (num_steps - 1))
    raw, smooth = [], []
    avg, best, stopped = 0.0, math.inf, False
    model.optimizer = sweep_opt
    model.make_train_function(force=True)
    try:
        it = iter(dataset.repeat()) if hasattr(dataset, "repeat") else iter(dataset)
        for i, lr in enumerate(lrs):
            sweep_opt.learning_rate = float(lr)
            x, y = next(it)[:2]
            model.reset_metrics()  # so "loss" is this batch's, not a running mean
            loss = float(model.train_on_batch(x, y, return_dict=True)["loss"])
            raw.append(loss)
            avg = beta * avg + (1 - beta) * loss
            s = avg / (1 - beta ** (i + 1))
            smooth.append(s)
            if math.isnan(loss) or s > stop_factor * best:
                stopped = True
                break
            if s < best and i > 10:
                best = s
    finally:
        model.optimizer = original
        model.make_train_function(force=True)
        model.set_weights(saved_weights)
        if saved_opt is not None:
            for v, val in zip(original.variables, saved_opt):
                v.assign(val)
        model.reset_metrics()
    n = len(raw)
    smooth = np.asarray(smooth)
    finite = np.where(np.isfinite(smooth))[0]
    best_lr = float(lrs[finite[np.argmin(smooth[finite])]]) if len(finite) else float("nan")
    return LRFinderResult(lrs[:n], smooth, np.asarray(raw), stopped, best_lr)
