"""The lesson's PyTorch code, transcribed: the independent reference for ssd_keras.

fastai 2018 lesson 9 (pascal-multi): anchors, `hw2corners`, `jaccard`, `actn_to_bb`,
`map_to_ground_truth`, `BCE_Loss`, `FocalLoss`, `get_y`, `ssd_1_loss`, `ssd_loss`, as in the
lesson (seed notes in `../shared/seed/`), line by line, with only these changes:

* modern torch: no `Variable`/`V(...)`, `size_average=False` → `reduction="sum"`,
  `1-pos` → `~pos`, `.data` dropped where it only unwrapped a Variable;
* the lesson's globals (`anchors`, `grid_sizes`, `anchor_cnr`, `id2cat`, `sz`, `loss_f`)
  become explicit arguments, bundled in `LessonAnchors` (built by `make_anchors`, the
  lesson's anchor cell) where several travel together;
* `FocalLoss`: the lesson passes its weight (a function of the logits) as `weight=` to
  `F.binary_cross_entropy_with_logits`. torch 0.3, which the lesson ran, implemented that
  function in Python as `loss * weight`, so the weight was differentiated; torch >= 1.0
  refuses a weight that requires grad. `BCE_Loss.forward` therefore multiplies the unreduced
  loss by the weight itself — the torch 0.3 semantics, gradients included.

Feeding it ssd_keras data: the lesson's targets are pixel boxes `(top, left, bottom, right)`
(= yxyx) padded with all-zero rows, and `get_y` divides by the image size `sz` and drops rows
with height <= 0. `targets_from_y_true` turns our relative `y_true [B, M, 5]` into that form
with `sz=1` (relative boxes, padding rows zeroed), so `get_y` is used unchanged.

Images with no objects make the lesson's loss NaN (mean over zero positive anchors, and
`overlaps.max(1)` of an empty matrix fails); ssd_keras defines them as classification-only.

Only the parity tests, the benchmarks and the Keras-vs-PyTorch notebook import this module;
it imports torch at import time, so import it lazily (e.g. `pytest.importorskip("torch")`
first). torch is an optional test dependency (`torch==2.13.0`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


# --- anchors (the lesson's "create more anchor boxes" cell) ---------------------------------


@dataclass
class LessonAnchors:
    """The lesson's anchor globals, as one object (all torch float32 except the numpy ones)."""

    anchor_scales: list
    k: int
    anc_offsets: list
    anc_x: np.ndarray
    anc_y: np.ndarray
    anc_ctrs: np.ndarray
    anc_sizes: np.ndarray
    grid_sizes: torch.Tensor  # [A, 1]
    anchors: torch.Tensor  # [A, 4] (cy, cx, h, w)
    anchor_cnr: torch.Tensor  # [A, 4] (top, left, bottom, right)


def make_anchors(
    anc_grids=(4, 2, 1),
    anc_zooms=(0.7, 1.0, 1.3),
    anc_ratios=((1.0, 1.0), (1.0, 0.5), (0.5, 1.0)),
):
    """The lesson's anchor cell. Defaults: the final multi-grid configuration (k=9, 189).

    The first half of the lesson uses `anc_grids=[4], anc_zooms=[1.], anc_ratios=[(1.,1.)]`.
    Note the lesson's names: `anc_x` repeats (varies slowly, i.e. rows), so it is the first
    coordinate of the fastai (top, left, ...) order.
    """
    anchor_scales = [(anz * i, anz * j) for anz in anc_zooms for (i, j) in anc_ratios]
    k = len(anchor_scales)
    anc_offsets = [1 / (o * 2) for o in anc_grids]
    anc_x = np.concatenate(
        [np.repeat(np.linspace(ao, 1 - ao, ag), ag) for ao, ag in zip(anc_offsets, anc_grids)]
    )
    anc_y = np.concatenate(
        [np.tile(np.linspace(ao, 1 - ao, ag), ag) for ao, ag in zip(anc_offsets, anc_grids)]
    )
    anc_ctrs = np.repeat(np.stack([anc_x, anc_y], axis=1), k, axis=0)
    anc_sizes = np.concatenate(
        [
            np.array([[o / ag, p / ag] for i in range(ag * ag) for o, p in anchor_scales])
            for ag in anc_grids
        ]
    )
    # fastai's V() turned float64 numpy into a FloatTensor.
    grid_sizes = torch.from_numpy(
        np.concatenate(
            [np.array([1 / ag for i in range(ag * ag) for o, p in anchor_scales]) for ag in anc_grids]
        )
    ).float().unsqueeze(1)
    anchors = torch.from_numpy(np.concatenate([anc_ctrs, anc_sizes], axis=1)).float()
    anchor_cnr = hw2corners(anchors[:, :2], anchors[:, 2:])
    return LessonAnchors(
        anchor_scales, k, anc_offsets, anc_x, anc_y, anc_ctrs, anc_sizes,
        grid_sizes, anchors, anchor_cnr,
    )


# --- boxes -------------------------------------------------------------------------------


def hw2corners(ctr, hw):
    """(cy, cx), (h, w) → (top, left, bottom, right)."""
    return torch.cat([ctr - hw / 2, ctr + hw / 2], dim=1)


def intersect(box_a, box_b):
    """Pairwise intersection areas of (top, left, bottom, right) boxes `[N,4]`, `[M,4]`."""
    max_xy = torch.min(box_a[:, None, 2:], box_b[None, :, 2:])
    min_xy = torch.max(box_a[:, None, :2], box_b[None, :, :2])
    inter = torch.clamp((max_xy - min_xy), min=0)
    return inter[:, :, 0] * inter[:, :, 1]


def box_sz(b):
    """Areas of (top, left, bottom, right) boxes."""
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


def jaccard(box_a, box_b):
    """IoU matrix `[N, M]` of (top, left, bottom, right) boxes (NaN for two zero-area boxes)."""
    inter = intersect(box_a, box_b)
    union = box_sz(box_a).unsqueeze(1) + box_sz(box_b).unsqueeze(0) - inter
    return inter / union


def actn_to_bb(actn, anchors, grid_sizes):
    """Box activations `[A, 4]` → (top, left, bottom, right) boxes, relative to the image."""
    actn_bbs = torch.tanh(actn)
    actn_centers = (actn_bbs[:, :2] / 2 * grid_sizes) + anchors[:, :2]
    actn_hw = (actn_bbs[:, 2:] / 2 + 1) * anchors[:, 2:]
    return hw2corners(actn_centers, actn_hw)


# --- matching ------------------------------------------------------------------------------


def map_to_ground_truth(overlaps, print_it=False):
    """overlaps `[num_objects, A]` → (gt_overlap `[A]`, gt_idx `[A]`)."""
    prior_overlap, prior_idx = overlaps.max(1)
    if print_it:
        print(prior_overlap)
    gt_overlap, gt_idx = overlaps.max(0)
    gt_overlap[prior_idx] = 1.99
    for i, o in enumerate(prior_idx):
        gt_idx[o] = i
    return gt_overlap, gt_idx


# --- losses --------------------------------------------------------------------------------


def one_hot_embedding(labels, num_classes):
    return torch.eye(num_classes)[labels.cpu()]


class BCE_Loss(nn.Module):
    """Binary cross-entropy over the non-background classes, summed, / num_classes."""

    def __init__(self, num_classes):
        super().__init__()
        self.num_classes = num_classes

    def forward(self, pred, targ):
        t = one_hot_embedding(targ, self.num_classes + 1)
        t = t[:, :-1].contiguous()  # drop the background column: all-zero target = background
        x = pred[:, :-1]
        w = self.get_weight(x, t)
        if w is None:
            return F.binary_cross_entropy_with_logits(x, t, reduction="sum") / self.num_classes
        # torch 0.3 semantics of `weight=` (differentiated); see the module docstring.
        loss = F.binary_cross_entropy_with_logits(x, t, reduction="none") * w
        return loss.sum() / self.num_classes

    def get_weight(self, x, t):
        return None


class FocalLoss(BCE_Loss):
    """The lesson's focal loss: alpha .25, gamma 1 (arguments added; defaults the lesson's)."""

    def __init__(self, num_classes, alpha=0.25, gamma=1.0):
        super().__init__(num_classes)
        self.alpha, self.gamma = alpha, gamma

    def get_weight(self, x, t):
        alpha, gamma = self.alpha, self.gamma
        p = x.sigmoid()
        pt = p * t + (1 - p) * (1 - t)
        w = alpha * t + (1 - alpha) * (1 - t)
        return w * (1 - pt).pow(gamma)


def get_y(bbox, clas, sz):
    """Undo fastai's padding: pixel boxes / sz, keep rows with height > 0."""
    bbox = bbox.view(-1, 4) / sz
    bb_keep = ((bbox[:, 2] - bbox[:, 0]) > 0).nonzero()[:, 0]
    return bbox[bb_keep], clas[bb_keep]


def ssd_1_loss(b_c, b_bb, bbox, clas, anc, loss_f, sz=1.0, thresh=0.4, print_it=False):
    """One image: (loc_loss, clas_loss). `anc` is a `LessonAnchors`."""
    bbox, clas = get_y(bbox, clas, sz)
    a_ic = actn_to_bb(b_bb, anc.anchors, anc.grid_sizes)
    overlaps = jaccard(bbox, anc.anchor_cnr)
    gt_overlap, gt_idx = map_to_ground_truth(overlaps, print_it)
    gt_clas = clas[gt_idx]
    pos = gt_overlap > thresh
    pos_idx = torch.nonzero(pos)[:, 0]
    gt_clas[~pos] = loss_f.num_classes  # the lesson: len(id2cat)
    gt_bbox = bbox[gt_idx]
    loc_loss = ((a_ic[pos_idx] - gt_bbox[pos_idx]).abs()).mean()
    clas_loss = loss_f(b_c, gt_clas)
    return loc_loss, clas_loss


def ssd_loss(pred, targ, anc, loss_f, sz=1.0, thresh=0.4, print_it=False, return_parts=False):
    """The lesson's batch loss: SUM over images of loc + clas (ssd_keras takes the mean).

    pred: `[b_clas [B, A, C+1], b_bb [B, A, 4]]` (the lesson's model output order);
    targ: `[bbox [B, M, 4] pixels or relative with sz=1, clas [B, M] long]`.
    `return_parts=True` also returns the summed loc and clas parts.
    """
    lcs, lls = 0.0, 0.0
    for b_c, b_bb, bbox, clas in zip(*pred, *targ):
        loc_loss, clas_loss = ssd_1_loss(b_c, b_bb, bbox, clas, anc, loss_f, sz, thresh, print_it)
        lls += loc_loss
        lcs += clas_loss
    if print_it:
        print(f"loc: {float(lls)}, clas: {float(lcs)}")
    if return_parts:
        return lls + lcs, lls, lcs
    return lls + lcs


# --- bridges from the ssd_keras layouts ----------------------------------------------------


def targets_from_y_true(y_true):
    """ssd_keras `y_true [B, M, 5]` (relative yxyx, class -1 = padding) → the lesson's targ.

    Returns `[bbox [B, M, 4] float32, clas [B, M] int64]` with padding rows all zero, as
    fastai padded them; use `sz=1` with `get_y` / `ssd_loss` (boxes are already relative).
    """
    y_true = torch.as_tensor(np.asarray(y_true, dtype=np.float32))
    valid = y_true[..., 4] >= 0
    bbox = torch.where(valid[..., None], y_true[..., :4], torch.zeros(()))
    clas = torch.where(valid, y_true[..., 4], torch.zeros(())).long()
    return [bbox, clas]


def pred_from_y_pred(y_pred, requires_grad=False):
    """ssd_keras `y_pred [B, A, 4 + C + 1]` → the lesson's `[b_clas, b_bb]` (shared leaf).

    Returns `(leaf, [b_clas, b_bb])`; `leaf.grad` after `backward()` is laid out like y_pred.
    """
    leaf = torch.tensor(np.asarray(y_pred, dtype=np.float32), requires_grad=requires_grad)
    return leaf, [leaf[..., 4:], leaf[..., :4]]
