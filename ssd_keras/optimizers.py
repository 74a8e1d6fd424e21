"""Layer groups, the lesson's way: discriminative learning rates (`lrs = [lr/100, lr/10, lr]`) and
freezing (`freeze_to`, `unfreeze`) over `ssd_keras.backbones.layer_groups(model)`.

Keras has no per-layer learning rates; the `Discriminative*` optimizers add a per-variable
multiplier in `update_step` (and an optional `beta_1` schedule) without patching anything.
"""

from __future__ import annotations

import keras
from keras import ops

from ssd_keras.backbones import layer_groups

__all__ = [
    "DiscriminativeAdam",
    "DiscriminativeAdamW",
    "DiscriminativeSGD",
    "DiscriminativeRMSprop",
    "discriminative_optimizer",
    "group_lr_multipliers",
    "freeze_to",
    "unfreeze",
]


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
    return layer_groups(model)


def freeze_to(model, n, groups=None):
    """fastai's `freeze_to(n)`: layer groups `[:n]` frozen, `[n:]` trainable; a negative `n`
    counts from the end, as in fastai (`groups[:n]` is Python's slice).

    `groups` defaults to `ssd_keras.backbones.layer_groups(model)` = `[early body, late
    body, head]`, so `freeze_to(model, 2)` (= `freeze_to(model, -1)`) trains the head only (the
    lesson's first stage) and `freeze_to(model, -2)` (= 1) the late body and the head, the
    lesson's `learn.freeze_to(-2)`. Frozen BatchNorm layers run in inference mode (Keras does
    that for `trainable=False`), as fastai keeps frozen BN fixed. Re-`compile` after changing
    what is frozen (`fit_one_cycle` does): the optimizer and the compiled train step hold the
    list of trainable variables. Returns the groups.
    """
    groups = _groups(model, groups)
    if not -len(groups) <= n <= len(groups):
        raise ValueError(f"freeze_to: n must be in [{-len(groups)}, {len(groups)}], got {n}")
    n = n % len(groups) if n < 0 else n
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
