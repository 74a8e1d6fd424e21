"""AnchorConfig against the lesson's anchor cell (ssd_keras.lesson_torch) and by hand."""

import numpy as np
import pytest

from ssd_keras.anchors import AnchorConfig

CONFIGS = {
    "multi_grid_default": {},  # grids (4, 2, 1), zooms (.7, 1, 1.3), 3 ratios: k=9, 189
    "single_grid_4": dict(grids=(4,), zooms=(1.0,), ratios=((1.0, 1.0),)),
    "seed_k3": dict(grids=(4, 2, 1), zooms=(1.0,), ratios=((1.0, 1.0), (1.0, 0.5), (0.5, 1.0))),
    "other": dict(grids=(3, 1), zooms=(1.0, 2.0), ratios=((1.0, 1.0), (2.0, 1.0))),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_equal_to_lesson(name):
    pytest.importorskip("torch", reason="the lesson's reference needs torch (requirements-test.txt)")
    from ssd_keras import lesson_torch as lt

    cfg = CONFIGS[name]
    ours = AnchorConfig(**cfg)
    ref = lt.make_anchors(
        **{k2: cfg[k1] for k1, k2 in [("grids", "anc_grids"), ("zooms", "anc_zooms"),
                                      ("ratios", "anc_ratios")] if k1 in cfg}
    )
    assert ours.k == ref.k
    assert ours.num_anchors == ref.anchors.shape[0]
    # Bit-identical, not just close: matching thresholds and ties depend on it.
    np.testing.assert_array_equal(ours.centers, ref.anchors.numpy())
    np.testing.assert_array_equal(ours.grid_sizes, ref.grid_sizes.numpy())
    np.testing.assert_array_equal(ours.corners, ref.anchor_cnr.numpy())
    assert ours.centers.dtype == ours.corners.dtype == ours.grid_sizes.dtype == np.float32


def test_counts():
    assert (AnchorConfig().k, AnchorConfig().num_anchors) == (9, 189)
    # The seed: "(4x4 + 2x2 + 1x1) * k", k=3 with zooms [1.] -> batch[0] is [64, 63, 21].
    assert AnchorConfig(zooms=(1.0,)).num_anchors == 63
    single = AnchorConfig.single_grid(4)
    assert (single.k, single.num_anchors) == (1, 16)
    assert AnchorConfig().anchors_per_grid() == [144, 36, 9]


def test_order_by_hand():
    single = AnchorConfig.single_grid(4)
    np.testing.assert_allclose(single.centers[0], [0.125, 0.125, 0.25, 0.25])
    np.testing.assert_allclose(single.centers[1], [0.125, 0.375, 0.25, 0.25])  # x fastest
    np.testing.assert_allclose(single.centers[4], [0.375, 0.125, 0.25, 0.25])
    np.testing.assert_allclose(single.corners[5], [0.25, 0.25, 0.5, 0.5])
    a = AnchorConfig()
    # k scales per cell, zoom-major then ratio: anchor 1 is zoom .7, ratio (1, .5).
    np.testing.assert_allclose(a.centers[1], [0.125, 0.125, 0.7 / 4, 0.35 / 4], rtol=1e-6)
    np.testing.assert_allclose(a.centers[3], [0.125, 0.125, 1.0 / 4, 1.0 / 4], rtol=1e-6)
    np.testing.assert_allclose(a.centers[9, :2], [0.125, 0.375])  # next cell
    np.testing.assert_allclose(a.centers[144], [0.25, 0.25, 0.35, 0.35], rtol=1e-6)  # 2x2 grid
    np.testing.assert_allclose(a.centers[-1], [0.5, 0.5, 0.65, 1.3], rtol=1e-6)  # 1x1, 1.3*(.5,1)
    np.testing.assert_allclose(a.grid_sizes[[0, 144, 188], 0], [0.25, 0.5, 1.0])


def test_config_round_trip():
    a = AnchorConfig(**CONFIGS["other"])
    b = AnchorConfig.from_config(a.get_config())
    assert a == b and hash(a) == hash(b)
    np.testing.assert_array_equal(a.corners, b.corners)
    assert AnchorConfig.coerce(a.get_config()) == a
    assert AnchorConfig.coerce(None) == AnchorConfig()
    assert AnchorConfig.coerce(a) is a


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(grids=(4, 0)), "grids must be positive"),
        (dict(grids=()), "grids must be a non-empty sequence"),
        (dict(zooms=(0.0,)), "zooms must be > 0"),
        (dict(ratios=((1.0, -1.0),)), "ratios must be"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AnchorConfig(**kwargs)


def test_coerce_rejects_other_types():
    with pytest.raises(TypeError, match="anchors must be an AnchorConfig"):
        AnchorConfig.coerce([4, 2, 1])
