"""The lesson's PyTorch transcription itself: the parts that differ from a literal copy."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the lesson's reference needs torch (requirements-test.txt)")
import torch.nn.functional as F  # noqa: E402

from ssd_keras.reference import lesson as lt  # noqa: E402


def test_focal_weight_is_differentiated():
    """torch 0.3 multiplied `weight=` in, so the lesson's focal weight got gradients."""
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(6, 4)).astype(np.float32), requires_grad=True)
    targ = torch.tensor([0, 1, 2, 3, 3, 1])  # 3 = background for 3 classes
    lt.FocalLoss(3)(x, targ).backward()
    # By hand, with the weight detached: a different gradient.
    x2 = x.detach().clone().requires_grad_(True)
    t = torch.eye(4)[targ][:, :-1]
    p = x2[:, :-1].sigmoid()
    w = (0.25 * t + 0.75 * (1 - t)) * (1 - (p * t + (1 - p) * (1 - t)))
    loss = (F.binary_cross_entropy_with_logits(x2[:, :-1], t, reduction="none") * w).sum() / 3
    np.testing.assert_allclose(lt.FocalLoss(3)(x.detach(), targ).item(), loss.item(), rtol=1e-6)
    (F.binary_cross_entropy_with_logits(x2[:, :-1], t, weight=w.detach(), reduction="sum") / 3).backward()
    assert not np.allclose(x.grad.numpy(), x2.grad.numpy(), rtol=1e-3)
    assert (x.grad[:, -1] == 0).all()  # the background column is ignored


def test_bce_by_hand():
    x = torch.zeros(2, 3)
    # Logit 0: log 2 per element, 2 anchors x 2 classes, / 2 classes.
    np.testing.assert_allclose(lt.BCE_Loss(2)(x, torch.tensor([0, 2])).item(), 2 * np.log(2), rtol=1e-6)


def test_targets_from_y_true_and_get_y():
    y_true = np.array([[[0.1, 0.2, 0.5, 0.6, 3], [9, 9, 9, 9, -1], [0.0, 0.0, 1.0, 1.0, 0]]], np.float32)
    bbox, clas = lt.targets_from_y_true(y_true)
    assert bbox[0, 1].tolist() == [0, 0, 0, 0] and clas.tolist() == [[3, 0, 0]]
    kept_boxes, kept_clas = lt.get_y(bbox[0], clas[0], sz=1.0)
    np.testing.assert_array_equal(kept_boxes.numpy(), y_true[0, [0, 2], :4])
    assert kept_clas.tolist() == [3, 0]
    # The lesson's pixel targets: / sz.
    pix, _ = lt.get_y(bbox[0] * 224, clas[0], sz=224)
    np.testing.assert_allclose(pix.numpy(), y_true[0, [0, 2], :4], rtol=1e-6)


def test_empty_image_is_nan_or_error_in_the_lesson():
    """Why ssd_keras defines empty images itself: the lesson's loss cannot take them."""
    anc = lt.make_anchors(anc_grids=[4], anc_zooms=[1.0], anc_ratios=[(1.0, 1.0)])
    bbox, clas = lt.targets_from_y_true(np.full((1, 2, 5), -1, np.float32))
    b_c, b_bb = torch.zeros(16, 4), torch.zeros(16, 4)
    with pytest.raises((RuntimeError, IndexError)):
        lt.ssd_1_loss(b_c, b_bb, bbox[0], clas[0], anc, lt.BCE_Loss(3))
