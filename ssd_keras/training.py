"""The lesson's training recipe in Keras: one-cycle LR, `lr_find`, `freeze_to`, layer-group LRs.

fastai 0.7 → here:

* `learn.fit(lr, 1, cycle_len=n, use_clr=(div, cut_div))` → `fit_one_cycle(model, ds, n,
  lr, div, cut_div)`, whose schedule is `OneCycleSchedule` (fastai's `CircularLR`);
* `use_clr_beta`'s momentum cycle (0.95 → 0.85 → 0.95) → `momentum_schedule=MomentumCycle(...)`
  on a `Discriminative*` optimizer (see `MomentumCycle` for why not a callback);
* `learn.lr_find()` / `learn.sched.plot()` → `lr_find(model, ds)` → `LRFinderResult.plot()`;
* `learn.freeze_to(n)` / `learn.unfreeze()` → `freeze_to(model, n)` / `unfreeze(model)` over
  `ssd_keras.backbones.layer_groups(model)` (`[early body, late body, head]`);
* `lrs = np.array([lr/100, lr/10, lr])` → `group_multipliers=(1/100, 1/10, 1)`: a per-variable
  learning-rate multiplier applied in the optimizer's `update_step` (Keras has no per-layer
  learning rates; `Discriminative*` subclasses add them without patching anything).
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field

import keras
import numpy as np
from keras import ops

__all__ = [
    "OneCycleSchedule",
    "MomentumCycle",
    "DiscriminativeAdam",
    "DiscriminativeAdamW",
    "DiscriminativeSGD",
    "DiscriminativeRMSprop",
    "discriminative_optimizer",
    "group_lr_multipliers",
    "freeze_to",
    "unfreeze",
    "lr_find",
    "LRFinderResult",
    "NaNGuard",
    "default_callbacks",
    "fit_one_cycle",
    "prepare_for_multi_worker",
]


# --------------------------------------------------------------------------- schedules


def _cycle_pct(step, total_steps, cut_div):
    """fastai's CircularLR position: 0 → 1 over the first `total // cut_div` iterations of the
    cycle, then 1 → 0 (reached one step after the end) over the rest. Cycles repeat."""
    total = float(total_steps)
    cut = float(max(1, total_steps // cut_div))  # fastai: nb // cut_div (0 would divide by 0)
    i = ops.mod(ops.cast(step, "float32"), total)
    up = i / cut
    down = 1.0 - (i - cut) / max(total - cut, 1.0)
    return ops.where(i > cut, down, up)


@keras.saving.register_keras_serializable(package="ssd_keras")
class OneCycleSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """fastai 0.7's `CircularLR` (`use_clr=(div, cut_div)`) as a Keras schedule.

    At iteration `i` of a cycle of `total_steps` (with `cut = total_steps // cut_div`):
    `lr = max_lr * (1 + pct * (div - 1)) / div`, where `pct = i / cut` while `i <= cut`
    (rising linearly from `max_lr / div` to `max_lr`) and `1 - (i - cut) / (total - cut)`
    after (falling back towards `max_lr / div`). The lesson: `use_clr=(20, 10)` with
    `cycle_len=5`, i.e. `OneCycleSchedule(lr, 5 * steps_per_epoch, div=20, cut_div=10)`.
    Steps past `total_steps` start a new cycle, as fastai's does.
    """

    def __init__(self, max_lr, total_steps, div=20.0, cut_div=10.0, name="one_cycle"):
        if not max_lr > 0:
            raise ValueError(f"OneCycleSchedule: max_lr must be > 0, got {max_lr}")
        if int(total_steps) < 1:
            raise ValueError(f"OneCycleSchedule: total_steps must be >= 1, got {total_steps}")
        if not div >= 1 or not cut_div > 0:
            raise ValueError(f"OneCycleSchedule: need div >= 1 and cut_div > 0, got {div}, {cut_div}")
        self.max_lr = float(max_lr)
        self.total_steps = int(total_steps)
        self.div = float(div)
        self.cut_div = float(cut_div)
        self.name = name

    def __call__(self, step):
        pct = _cycle_pct(step, self.total_steps, self.cut_div)
        return self.max_lr * (1.0 + pct * (self.div - 1.0)) / self.div

    def get_config(self):
        return {"max_lr": self.max_lr, "total_steps": self.total_steps, "div": self.div,
                "cut_div": self.cut_div, "name": self.name}


@keras.saving.register_keras_serializable(package="ssd_keras")
class MomentumCycle(keras.optimizers.schedules.LearningRateSchedule):
    """fastai's cyclic momentum (`use_clr_beta`'s `moms`, `CircularLR.calc_mom`): Adam's
    `beta_1` goes from `moms[0]` down to `moms[1]` while the LR rises, and back up while it
    falls, on the same iteration grid as `OneCycleSchedule(total_steps, cut_div=cut_div)`.

    Pass it as `momentum_schedule=` to a `Discriminative*` optimizer with a `beta_1` (Adam,
    AdamW). Why not a callback setting `optimizer.beta_1`: Keras 3 reads `beta_1` as a Python
    float when it traces the train step, so a callback's later changes never reach the
    compiled step; turning it into a `keras.Variable` does, but then the optimizer gains a
    variable and its config holds a tensor, which breaks `.keras` checkpoints and
    `BackupAndRestore`. A schedule evaluated inside `update_step` has neither problem and
    serialises. (fastai evaluates momentum one iteration after the LR of the same step; here
    both use the same iteration.)
    """

    def __init__(self, total_steps, moms=(0.95, 0.85), cut_div=10.0, name="momentum_cycle"):
        if int(total_steps) < 1:
            raise ValueError(f"MomentumCycle: total_steps must be >= 1, got {total_steps}")
        if len(moms) != 2 or not all(0 <= m < 1 for m in moms):
            raise ValueError(f"MomentumCycle: moms must be two values in [0, 1), got {moms!r}")
        self.total_steps = int(total_steps)
        self.moms = (float(moms[0]), float(moms[1]))
        self.cut_div = float(cut_div)
        self.name = name

    def __call__(self, step):
        pct = _cycle_pct(step, self.total_steps, self.cut_div)
        return self.moms[0] - pct * (self.moms[0] - self.moms[1])

    def get_config(self):
        return {"total_steps": self.total_steps, "moms": list(self.moms),
                "cut_div": self.cut_div, "name": self.name}


# --------------------------------------------------------------- layer-group optimizers


class _DiscriminativeMixin:
    """Adds per-variable LR multipliers and an optional `beta_1` schedule to a Keras optimizer.

    `lr_multipliers`: `{variable.path: multiplier}`; variables not listed use 1. The hook is
    `update_step(gradient, variable, learning_rate)`, which every Keras 3 optimizer implements
    and which receives the (scheduled) learning rate: the multiplier scales it there, so it
    composes with any schedule. Weight decay (`weight_decay=`) is applied with the
    unscaled rate, as Keras applies it before `update_step`.
    """

    def __init__(self, *args, lr_multipliers=None, momentum_schedule=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lr_multipliers = {str(k): float(v) for k, v in (lr_multipliers or {}).items()}
        if isinstance(momentum_schedule, dict):
            momentum_schedule = keras.saving.deserialize_keras_object(momentum_schedule)
        if momentum_schedule is not None and not hasattr(self, "beta_1"):
            raise ValueError(
                f"{type(self).__name__}: momentum_schedule needs an optimizer with beta_1 "
                "(DiscriminativeAdam / DiscriminativeAdamW)"
            )
        self.momentum_schedule = momentum_schedule
        self._lr_mult = None

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._lr_mult = [self.lr_multipliers.get(v.path, 1.0) for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        mult = self._lr_mult[self._get_variable_index(variable)] if self._lr_mult else 1.0
        if mult != 1.0:
            learning_rate = ops.multiply(learning_rate, mult)
        if self.momentum_schedule is None:
            return super().update_step(gradient, variable, learning_rate)
        # Swap the float beta_1 for this step's value only while the parent's update_step
        # reads it (it is a traced tensor in graph mode); the float stays in get_config.
        beta_1 = self.beta_1
        object.__setattr__(self, "beta_1", self.momentum_schedule(self.iterations))
        try:
            return super().update_step(gradient, variable, learning_rate)
        finally:
            object.__setattr__(self, "beta_1", beta_1)

    def get_config(self):
        config = super().get_config()
        config["lr_multipliers"] = dict(self.lr_multipliers)
        config["momentum_schedule"] = (
            None if self.momentum_schedule is None
            else keras.saving.serialize_keras_object(self.momentum_schedule)
        )
        return config


@keras.saving.register_keras_serializable(package="ssd_keras")
class DiscriminativeAdam(_DiscriminativeMixin, keras.optimizers.Adam):
    """`keras.optimizers.Adam` with `lr_multipliers` and `momentum_schedule` (see the mixin)."""


@keras.saving.register_keras_serializable(package="ssd_keras")
class DiscriminativeAdamW(_DiscriminativeMixin, keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` with `lr_multipliers` and `momentum_schedule`."""


@keras.saving.register_keras_serializable(package="ssd_keras")
class DiscriminativeSGD(_DiscriminativeMixin, keras.optimizers.SGD):
    """`keras.optimizers.SGD` with `lr_multipliers`."""


@keras.saving.register_keras_serializable(package="ssd_keras")
class DiscriminativeRMSprop(_DiscriminativeMixin, keras.optimizers.RMSprop):
    """`keras.optimizers.RMSprop` with `lr_multipliers`."""


_DISCRIMINATIVE = {
    keras.optimizers.Adam: DiscriminativeAdam,
    keras.optimizers.AdamW: DiscriminativeAdamW,
    keras.optimizers.SGD: DiscriminativeSGD,
    keras.optimizers.RMSprop: DiscriminativeRMSprop,
}


def group_lr_multipliers(groups, multipliers):
    """`{variable.path: multiplier}` for layer groups: `multipliers[i]` for `groups[i]`'s
    weights (e.g. `(1/100, 1/10, 1)`, the lesson's `[lr/100, lr/10, lr]` over `lr`)."""
    if len(groups) != len(multipliers):
        raise ValueError(
            f"group_multipliers: {len(multipliers)} values for {len(groups)} layer groups"
        )
    out, owner = {}, {}
    for gi, (group, m) in enumerate(zip(groups, multipliers)):
        for layer in group:
            for v in layer.weights:
                if v.path in owner and owner[v.path] != gi:
                    raise ValueError(
                        f"group_multipliers: variable path {v.path!r} appears in groups "
                        f"{owner[v.path]} and {gi}; give the layers unique names"
                    )
                owner[v.path] = gi
                out[v.path] = float(m)
    return out


def discriminative_optimizer(optimizer="adam", learning_rate=None, groups=None,
                             group_multipliers=None, momentum_schedule=None, **kwargs):
    """Build a `Discriminative*` optimizer.

    Args:
        optimizer: "adam", "adamw", "sgd", "rmsprop", or a Keras optimizer of those classes
            (its config is copied).
        learning_rate: float or schedule (e.g. `OneCycleSchedule`); overrides the copied one.
        groups, group_multipliers: layer groups and one LR multiplier per group.
        momentum_schedule: e.g. `MomentumCycle(total_steps)` (Adam / AdamW only).
        kwargs: other optimizer arguments (`weight_decay`, `beta_2`, ...).
    """
    if isinstance(optimizer, str):
        names = {"adam": DiscriminativeAdam, "adamw": DiscriminativeAdamW,
                 "sgd": DiscriminativeSGD, "rmsprop": DiscriminativeRMSprop}
        if optimizer.lower() not in names:
            raise ValueError(f"optimizer: expected one of {sorted(names)}, got {optimizer!r}")
        cls, config = names[optimizer.lower()], {}
    else:
        base = next((c for c in type(optimizer).__mro__ if c in _DISCRIMINATIVE), None)
        if base is None:
            raise TypeError(
                f"optimizer: {type(optimizer).__name__} is not supported for layer-group "
                f"learning rates; use one of {[c.__name__ for c in _DISCRIMINATIVE]}"
            )
        cls = _DISCRIMINATIVE[base]
        config = optimizer.get_config()
        config.pop("name", None)
    config.update(kwargs)
    if learning_rate is not None:
        config["learning_rate"] = learning_rate
    if group_multipliers is not None:
        if groups is None:
            raise ValueError("group_multipliers needs groups (e.g. layer_groups(model))")
        config["lr_multipliers"] = group_lr_multipliers(groups, group_multipliers)
    if momentum_schedule is not None:
        config["momentum_schedule"] = momentum_schedule
    return cls(**config)


# --------------------------------------------------------------------------- freezing


def _groups(model, groups):
    if groups is not None:
        return [list(g) for g in groups]
    from ssd_keras.backbones import layer_groups

    return layer_groups(model)


def freeze_to(model, n, groups=None):
    """fastai's `freeze_to(n)`: layer groups `[0, n)` frozen, `[n, ...)` trainable.

    `groups` defaults to `ssd_keras.backbones.layer_groups(model)` = `[early body, late
    body, head]`, so `freeze_to(model, 2)` trains the head only (the lesson's starting
    point) and `freeze_to(model, 1)` the late body too. Frozen BatchNorm layers run in
    inference mode (Keras does that for `trainable=False`), as fastai keeps frozen BN fixed.
    Re-`compile` after changing what is frozen (`fit_one_cycle` does): the optimizer and the
    compiled train step hold the list of trainable variables. Returns the groups.
    """
    groups = _groups(model, groups)
    if not 0 <= n <= len(groups):
        raise ValueError(f"freeze_to: n must be in [0, {len(groups)}], got {n}")
    # A frozen container hides its children's flags, so make every layer (containers such
    # as the nested "backbone" model included) trainable first, then freeze groups [0, n).
    for layer in _all_layers(model):
        layer.trainable = True
    for group in groups[:n]:
        for layer in group:
            layer.trainable = False
    return groups


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def unfreeze(model, groups=None):
    """fastai's `unfreeze()`: every layer trainable (`freeze_to(model, 0)`)."""
    return freeze_to(model, 0, groups)


# --------------------------------------------------------------------------- callbacks


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
        loss: the loss (e.g. `SSDLoss(anchors, num_classes)`); default: the model's compiled
            loss. Its `metrics()`, when it has one (SSDLoss: `loc`, `clas`), are logged.
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
    loss = loss if loss is not None else getattr(model, "loss", None)
    if loss is None:
        raise ValueError("fit_one_cycle: pass loss= (the model is not compiled with one)")
    if group_multipliers is not None and groups is None:
        groups = _groups(model, None)
    strategy = getattr(model, "distribute_strategy", None)
    scope = strategy.scope() if strategy is not None else _nullcontext()
    with scope:
        # In the scope: metric variables made outside it are not summed across workers.
        if metrics is None:
            metrics = loss.metrics() if callable(getattr(loss, "metrics", None)) else []
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


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# ------------------------------------------------------------------------- multi-worker


def _is_multi_worker(strategy):
    """True for a MultiWorkerMirroredStrategy that spans more than one worker (TF_CONFIG)."""
    import tensorflow as tf

    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode())


def _first_local_batch(iterator, strategy):
    """The first batch of Keras' epoch iterator, this worker's first replica's tensors."""
    import tensorflow as tf

    for _, _, it in iterator:
        batch = next(it)
        break
    return tf.nest.map_structure(
        lambda v: (strategy.experimental_local_results(v)[0]
                   if isinstance(v, tf.distribute.DistributedValues) else v),
        batch)


def prepare_for_multi_worker(model, strategy=None):
    """Make plain `model.fit` / `evaluate` work under `tf.distribute.MultiWorkerMirroredStrategy`
    (Keras 3 with TensorFlow; checked with Keras 3.15.1 and TF 2.21). Returns `model`.

    Keras 3's `fit` fails twice under a multi-worker MWMS (keras-team/keras#20585):

    1. `TensorFlowTrainer._maybe_symbolic_build` all-reduces the first input batch, a tuple
       of `PerReplica`, with `strategy.reduce("MEAN", batch, axis=None)`, only to learn its
       shapes; MWMS cannot reduce a nest ("Attempt to convert a value (PerReplica...) to a
       Tensor"). Building the model, optimizer and metrics beforehand does not avoid it: the
       reduce runs before Keras looks at what is built. Here the symbolic build gets this
       worker's own first batch instead (shapes and dtypes are all it needs).
    2. `reduce_per_replica` then reduces every log with `strategy.reduce("MEAN", v, axis=0)`,
       which a scalar lacks ("Invalid reduction dimension 0 for input with 0 dimensions").
       Here `train_step` / `test_step` return each log with a leading axis of length 1, so
       that reduction is the mean over the replicas and gives back the scalar.

    Both are overrides on this model instance only (no Keras module or class is patched);
    the model's config and saved files are unchanged. Anywhere else (one device,
    `MirroredStrategy`, a one-worker MWMS) this returns the model untouched, so it is safe
    to call unconditionally; calling it twice changes nothing more. `fit_one_cycle` calls it.

    Create the model, and compile it, under `strategy.scope()` as usual (metrics included:
    a metric built outside the scope is not aggregated across workers), and give `fit` the
    *global* batch (a data set batched by the global batch size; each worker reads its shard).
    Per-step logs are the mean over replicas of each replica's value, as Keras does under
    `MirroredStrategy`; epoch logs come from the summed metric variables. As under
    `MirroredStrategy`, a last partial batch that does not split evenly over the replicas
    weights its images unequally in the gradient (batch with `drop_remainder=True` for
    exact parity with one device), and `steps_per_execution > 1` fails inside Keras
    (keras-team/keras#19246, with or without this).

    Args:
        model: a `keras.Model` (TensorFlow backend).
        strategy: the strategy to check; default `model.distribute_strategy`.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"prepare_for_multi_worker: model must be a keras.Model, got {type(model).__name__}")
    strategy = strategy or model.distribute_strategy
    if not _is_multi_worker(strategy) or getattr(model, "_ssd_multi_worker", False):
        return model
    build = getattr(model, "_maybe_symbolic_build", None)
    if build is not None:  # a later Keras without this private method has no failure 1

        def maybe_symbolic_build(iterator=None, data_batch=None):
            if iterator is not None and data_batch is None:
                data_batch = _first_local_batch(iterator, strategy)
            return build(data_batch=data_batch)

        model._maybe_symbolic_build = maybe_symbolic_build

    train_step, test_step = model.train_step, model.test_step

    def with_replica_axis(logs):
        return keras.tree.map_structure(lambda v: ops.expand_dims(v, 0), logs)

    model.train_step = lambda data: with_replica_axis(train_step(data))
    model.test_step = lambda data: with_replica_axis(test_step(data))
    # Step functions traced before this point hold the old train_step.
    model.train_function = model.test_function = None
    model._ssd_multi_worker = True
    return model


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
    with strategy.scope() if strategy is not None else _nullcontext():
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
