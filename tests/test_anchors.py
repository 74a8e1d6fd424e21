"""AnchorConfig against the lesson's anchor cell (ssd_keras.reference.lesson) and by hand."""

import numpy as np
import pytest

from ssd_keras.anchors import AnchorConfig, anchor_coverage
from ssd_keras.viz import plot_anchor_coverage

CONFIGS = {
    "multi_grid_default": {},  # grids (4, 2, 1), zooms (.7, 1, 1.3), 3 ratios: k=9, 189
    "single_grid_4": dict(grids=(4,), zooms=(1.0,), ratios=((1.0, 1.0),)),
    "seed_k3": dict(grids=(4, 2, 1), zooms=(1.0,), ratios=((1.0, 1.0), (1.0, 0.5), (0.5, 1.0))),
    "other": dict(grids=(3, 1), zooms=(1.0, 2.0), ratios=((1.0, 1.0), (2.0, 1.0))),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_equal_to_lesson(name):
    pytest.importorskip("torch", reason="the lesson's reference needs torch (requirements-test.txt)")
    from ssd_keras.reference import lesson as lt

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
        # int() would make these a 4x4 and a 1x1 grid without a word.
        (dict(grids=[4.7]), r"grids must be positive integers, got \[4.7\]"),
        (dict(grids=(True, 2)), r"grids must be positive integers, got \(True, 2\)"),
        (dict(grids=("4",)), "grids must be positive integers"),
        (dict(zooms=(0.0,)), "zooms must be > 0"),
        (dict(zooms=((1.0, 0.5),)), r"zooms must be a sequence of numbers, e.g. \(0.7, 1.0, 1.3\)"),
        (dict(ratios=((1.0, -1.0),)), "ratios must be"),
        # One flat pair instead of a sequence of pairs.
        (dict(ratios=(1.0, 0.5)), r"ratios must be a sequence of \(h, w\) pairs, e.g. .*got \(1.0, 0.5\)"),
        (dict(ratios=((1.0, 0.5, 2.0),)), r"ratios must be a sequence of \(h, w\) pairs"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AnchorConfig(**kwargs)


def test_whole_grid_sizes_of_any_number_type_are_accepted():
    # A JSON config may hold 4.0; numpy arrays give numpy integers.
    config = AnchorConfig(grids=(4.0, np.int64(2), 1))
    assert config == AnchorConfig(grids=(4, 2, 1))
    assert all(type(g) is int for g in config.grids)  # 4.0 == 4 would hide a float kept


def test_coerce_rejects_other_types():
    with pytest.raises(TypeError, match="anchors must be an AnchorConfig"):
        AnchorConfig.coerce([4, 2, 1])


BOX_A = [0.1, 0.1, 0.4, 0.4]


def test_anchor_coverage_exact_and_uncoverable_boxes():
    anchors = AnchorConfig.single_grid(4)  # 16 anchors, cells of 0.25
    exact = anchors.corners[5]  # IoU 1 with anchor 5
    tiny = [0.01, 0.01, 0.03, 0.03]  # best IoU 0.0004/0.0625 = 0.0064
    wide = [0.0, 0.0, 0.25, 1.0]  # a 1x4 strip: best IoU 1/4 with any cell
    cov = anchor_coverage([np.array([exact, tiny]), np.array([wide]), np.zeros((0, 4))], anchors)
    assert cov["num_objects"] == 3 and cov["num_uncovered"] == 2
    assert cov["fraction_uncovered"] == pytest.approx(2 / 3)
    np.testing.assert_allclose(cov["best_iou"], [1.0, 0.0004 / 0.0625, 0.25], rtol=1e-5)
    assert cov["best_anchor"][0] == 5
    np.testing.assert_array_equal(cov["positives_per_object"], [1, 0, 0])
    assert cov["by_size"]["small"] == pytest.approx(
        {"num_objects": 1, "num_uncovered": 1, "fraction_uncovered": 1.0, "mean_best_iou": 0.0064})
    assert cov["by_size"]["medium"]["num_objects"] == 1  # exact: sqrt(area) 0.25
    assert cov["by_size"]["large"]["num_uncovered"] == 1  # wide: sqrt(0.25) = 0.5
    assert cov["histogram"][0].sum() == 3
    # a 2x2-cell box: uncovered by the 4x4 grid, exact for the lesson's 2x2 grid at zoom 1
    quarter = np.array([[0.0, 0.0, 0.5, 0.5]])
    assert anchor_coverage([quarter], anchors)["best_iou"][0] == pytest.approx(0.25)
    assert anchor_coverage([quarter], AnchorConfig())["best_iou"][0] == pytest.approx(1.0)
    fig = plot_anchor_coverage(cov, title="4x4")
    assert len(fig.axes) == 2


def test_anchor_coverage_accepts_y_true_and_rejects_bad_boxes():
    anchors = AnchorConfig.single_grid(4)
    y_true = np.array([[list(anchors.corners[0]) + [0], [0, 0, 0, 0, -1]]], np.float32)
    assert anchor_coverage(y_true, anchors)["num_objects"] == 1
    with pytest.raises(ValueError, match="image 0: invalid yxyx"):
        anchor_coverage([np.array([[0.5, 0.5, 0.1, 0.9]])], anchors)
