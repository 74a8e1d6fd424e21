"""Learning-rate and momentum schedules of the lesson: fastai 0.7's `use_clr=(div, cut_div)`
(`CircularLR`) as `OneCycleSchedule`, and `use_clr_beta`'s momentum cycle as `MomentumCycle`."""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["OneCycleSchedule", "MomentumCycle"]


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
