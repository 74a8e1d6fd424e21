"""ssd_keras.schedules: fastai 0.7's CircularLR (use_clr) and the momentum cycle, value by value."""

import keras
import numpy as np
import pytest

from ssd_keras.schedules import MomentumCycle, OneCycleSchedule


def fastai_circular_lr(init_lr, nb, div, cut_div, n):
    """fastai 0.7 sgdr.CircularLR.calc_lr, transcribed: the LR of iterations 0..n-1."""
    out, cycle_iter = [], 0
    for _ in range(n):
        cut_pt = nb // cut_div
        if cycle_iter > cut_pt:
            pct = 1 - (cycle_iter - cut_pt) / (nb - cut_pt)
        else:
            pct = cycle_iter / cut_pt
        out.append(init_lr * (1 + pct * (div - 1)) / div)
        cycle_iter += 1
        if cycle_iter == nb:
            cycle_iter = 0
    return np.array(out)


def test_one_cycle_exact_values():
    s = OneCycleSchedule(1e-2, total_steps=100, div=20, cut_div=10)
    lr = lambda i: float(s(i))  # noqa: E731
    assert lr(0) == pytest.approx(1e-2 / 20)  # start: lr / div
    assert lr(5) == pytest.approx(1e-2 * (1 + 0.5 * 19) / 20)  # halfway up
    assert lr(10) == pytest.approx(1e-2)  # turning point (nb // cut_div) = peak
    assert lr(11) == pytest.approx(1e-2 * (1 + (1 - 1 / 90) * 19) / 20)
    assert lr(99) == pytest.approx(1e-2 * (1 + (1 / 90) * 19) / 20)  # end, one step above lr/div
    assert lr(100) == pytest.approx(1e-2 / 20)  # next cycle
    ref = fastai_circular_lr(1e-2, 100, 20, 10, 250)
    np.testing.assert_allclose([lr(i) for i in range(250)], ref, rtol=1e-6)
    # the lesson's "use_clr=(20, 10)" over an odd number of steps (integer cut point)
    s2 = OneCycleSchedule(3e-3, total_steps=37, div=20, cut_div=10)
    np.testing.assert_allclose([float(s2(i)) for i in range(37)],
                               fastai_circular_lr(3e-3, 37, 20, 10, 37), rtol=1e-6)
    assert keras.optimizers.schedules.deserialize(
        keras.optimizers.schedules.serialize(s)).get_config() == s.get_config()


def test_momentum_cycle_values():
    m = MomentumCycle(100, moms=(0.95, 0.85), cut_div=10)
    assert float(m(0)) == pytest.approx(0.95)
    assert float(m(10)) == pytest.approx(0.85)  # lowest at the LR peak
    assert float(m(55)) == pytest.approx(0.85 + 0.5 * 0.1)
    assert float(m(100)) == pytest.approx(0.95)
    with pytest.raises(ValueError, match="moms"):
        MomentumCycle(10, moms=(0.95,))
