"""Anchor boxes: the lesson's `anchors`, `grid_sizes` and `anchor_cnr`, as one config object.

The lesson builds anchors as module-level globals; here they live in `AnchorConfig`, which is
passed to the head (how many anchors per cell), the loss (matching), the decoder and the
evaluation. It is plain data (`get_config` / `from_config`), so models and losses that hold it
save and load.
"""

from __future__ import annotations

import numbers

import numpy as np

from ssd_keras._checks import is_whole
from ssd_keras.boxes import centers_to_corners, jaccard


class AnchorConfig:
    """Anchors on several square grids, with zooms and aspect ratios.

    Args:
        grids: grid sizes, coarse order as in the lesson, e.g. `(4, 2, 1)`.
        zooms: anchor scale multipliers relative to a grid cell.
        ratios: a sequence of `(h, w)` multiplier pairs, e.g. `((1, 1), (1, .5), (.5, 1))`
            (one ratio: `((1, 1),)`).

    Anchor order (the `num_anchors` axis everywhere in ssd_keras) is the lesson's: grid by
    grid, cells row-major, then the `k` scales, zoom-major then ratio.

    Attributes (numpy float32, boxes relative to the image):
        k: anchors per grid cell (`len(zooms) * len(ratios)`).
        num_anchors: `sum(g * g for g in grids) * k`.
        centers: `[A, 4]` `(cy, cx, h, w)` — the lesson's `anchors`.
        grid_sizes: `[A, 1]` cell size of each anchor's grid — the lesson's `grid_sizes`.
        corners: `[A, 4]` yxyx — the lesson's `anchor_cnr`.
    """

    def __init__(
        self,
        grids=(4, 2, 1),
        zooms=(0.7, 1.0, 1.3),
        ratios=((1.0, 1.0), (1.0, 0.5), (0.5, 1.0)),
    ):
        # Checked before int(): grids=[4.7] would silently be a 4x4 grid, [True] a 1x1 one.
        if not all(is_whole(g) and g >= 1 for g in _as_sequence(grids, "grids")):
            raise ValueError(f"AnchorConfig: grids must be positive integers, got {grids!r}")
        self.grids = tuple(int(g) for g in grids)
        # Pairs here are ratios given as zooms; float() would fail without naming the argument.
        if not all(isinstance(z, numbers.Real) and not isinstance(z, (bool, np.bool_))
                   for z in _as_sequence(zooms, "zooms")):
            raise ValueError(f"AnchorConfig: zooms must be a sequence of numbers, e.g. (0.7, 1.0, 1.3), "
                             f"got {zooms!r}")
        self.zooms = tuple(float(z) for z in zooms)
        if any(not z > 0 for z in self.zooms):
            raise ValueError(f"AnchorConfig: zooms must be > 0, got {zooms!r}")
        # A flat (1.0, 0.5) is one pair, not a sequence of pairs: say so rather than fail on r[0].
        if any(isinstance(r, (str, bytes)) or not hasattr(r, "__len__") or len(r) != 2
               for r in _as_sequence(ratios, "ratios")):
            raise ValueError(
                f"AnchorConfig: ratios must be a sequence of (h, w) pairs, e.g. ((1.0, 1.0), (1.0, 0.5)) "
                f"(one pair: ((1.0, 0.5),)), got {ratios!r}"
            )
        self.ratios = tuple((float(h), float(w)) for h, w in ratios)
        if any(not (h > 0 and w > 0) for h, w in self.ratios):
            raise ValueError(
                f"AnchorConfig: ratios must be (h, w) pairs > 0, got {ratios!r}"
            )
        self.scales = [(z * h, z * w) for z in self.zooms for (h, w) in self.ratios]
        self.k = len(self.scales)
        self.num_anchors = sum(g * g for g in self.grids) * self.k
        self.centers, self.grid_sizes = self._build()
        self.corners = centers_to_corners(self.centers)

    @classmethod
    def single_grid(cls, grid=4):
        """The first half of the lesson: one `grid`×`grid` grid, one anchor per cell (k=1)."""
        return cls(grids=(grid,), zooms=(1.0,), ratios=((1.0, 1.0),))

    def _build(self):
        # Written out as the lesson does it (float64 numpy, cast at the end) so the float32
        # values are bit-identical to the lesson's `anchors` / `grid_sizes`.
        offsets = [1 / (g * 2) for g in self.grids]
        # The lesson calls these anc_x / anc_y, but the first varies slowly (rows): it is y.
        anc_y = np.concatenate(
            [np.repeat(np.linspace(o, 1 - o, g), g) for o, g in zip(offsets, self.grids)]
        )
        anc_x = np.concatenate(
            [np.tile(np.linspace(o, 1 - o, g), g) for o, g in zip(offsets, self.grids)]
        )
        ctrs = np.repeat(np.stack([anc_y, anc_x], axis=1), self.k, axis=0)
        sizes = np.concatenate(
            [
                np.array([[h / g, w / g] for _ in range(g * g) for h, w in self.scales])
                for g in self.grids
            ]
        )
        grid_sizes = np.concatenate(
            [np.array([1 / g for _ in range(g * g) for _ in self.scales]) for g in self.grids]
        )[:, None]
        centers = np.concatenate([ctrs, sizes], axis=1).astype(np.float32)
        return centers, grid_sizes.astype(np.float32)

    def anchors_per_grid(self):
        """Number of anchors contributed by each grid, in order."""
        return [g * g * self.k for g in self.grids]

    def get_config(self):
        return {
            "grids": list(self.grids),
            "zooms": list(self.zooms),
            "ratios": [list(r) for r in self.ratios],
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    @classmethod
    def coerce(cls, anchors):
        """Accept an AnchorConfig, its config dict, or None (the default multi-grid)."""
        if anchors is None:
            return cls()
        if isinstance(anchors, cls):
            return anchors
        if isinstance(anchors, dict):
            return cls.from_config(anchors)
        raise TypeError(
            f"anchors must be an AnchorConfig or its get_config() dict, got {type(anchors).__name__}"
        )

    def __eq__(self, other):
        return isinstance(other, AnchorConfig) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash((self.grids, self.zooms, self.ratios))

    def __repr__(self):
        return (
            f"AnchorConfig(grids={self.grids}, zooms={self.zooms}, ratios={self.ratios})"
            f"  # k={self.k}, num_anchors={self.num_anchors}"
        )


def _as_sequence(value, name):
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) == 0:
        raise ValueError(f"AnchorConfig: {name} must be a non-empty sequence, got {value!r}")
    return value


# ------------------------------------------------------------------ coverage of a data set


def _boxes_list(boxes_per_image):
    """Accept a list of [m, 4] (or [m, 5+] y_true rows), a y_true array, or a tf.data set
    of (images, y_true) → one numpy [N, 4] array of all objects (padding dropped)."""
    if hasattr(boxes_per_image, "as_numpy_iterator"):
        rows = []
        for batch in boxes_per_image.as_numpy_iterator():
            y = batch[1] if isinstance(batch, tuple) else batch
            rows += [r[r[:, 4] >= 0, :4] for r in np.asarray(y)]
        boxes_per_image = rows
    if isinstance(boxes_per_image, np.ndarray) and boxes_per_image.ndim == 3:
        boxes_per_image = list(boxes_per_image)
    out = []
    for i, b in enumerate(boxes_per_image):
        b = np.asarray(b, np.float64)
        if b.size == 0:
            continue
        if b.ndim != 2 or b.shape[1] < 4:
            raise ValueError(f"anchor_coverage: image {i}: expected boxes [m, 4], got {b.shape}")
        if b.shape[1] >= 5:
            b = b[b[:, 4] >= 0]
        b = b[:, :4]
        bad = (b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1]) | ~np.isfinite(b).all(1)
        if bad.any():
            raise ValueError(
                f"anchor_coverage: image {i}: invalid yxyx boxes in rows "
                f"{np.where(bad)[0].tolist()}, e.g. {b[bad][0].tolist()}"
            )
        out.append(b)
    return np.concatenate(out) if out else np.zeros((0, 4))


def anchor_coverage(boxes_per_image, anchors, threshold=0.5, size_edges=(0.1, 0.3), bins=20):
    """How well an `AnchorConfig` covers a data set's objects.

    For each object the best IoU with any anchor: an object whose best IoU is not above
    `threshold` gets no anchor by IoU and is matched only by `map_to_ground_truth`'s forced
    rule (overlap 1.99 on its best anchor), so it trains one anchor whose box is a poor fit.
    That is the lesson's argument for more zooms and ratios. Pass `threshold=0.4` to mirror
    `SSDLoss(pos_threshold=0.4)` (the lesson's `gt_overlap > 0.4`).

    Args:
        boxes_per_image: list of `[m, 4]` relative yxyx arrays (or y_true rows `[m, 5]`, padding
            class -1 dropped), a y_true array `[B, max_boxes, 5]`, or a tf.data set of
            `(images, y_true)`.
        anchors: an `AnchorConfig`.
        threshold: IoU an object's best anchor must exceed.
        size_edges: `sqrt(area)` edges (relative) of the small / medium / large buckets.
        bins: number of histogram bins on [0, 1].

    Returns:
        dict: `num_objects`, `num_uncovered`, `fraction_uncovered`, `best_iou [N]`,
        `best_anchor [N]`, `positives_per_object [N]` (anchors above threshold),
        `histogram` (counts, bin_edges), `by_size` {small, medium, large: {num_objects,
        num_uncovered, fraction_uncovered, mean_best_iou}}, `threshold`, `size_edges`.
    """
    boxes = _boxes_list(boxes_per_image)
    iou = jaccard(boxes, anchors.corners.astype(np.float64))
    n = len(boxes)
    best = iou.max(axis=1) if n else np.zeros(0)
    uncovered = ~(best > threshold)
    size = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    lo, hi = size_edges
    buckets = {"small": size < lo, "medium": (size >= lo) & (size < hi), "large": size >= hi}
    by_size = {}
    for name, sel in buckets.items():
        m = int(sel.sum())
        by_size[name] = {
            "num_objects": m,
            "num_uncovered": int((uncovered & sel).sum()),
            "fraction_uncovered": float((uncovered & sel).sum() / m) if m else float("nan"),
            "mean_best_iou": float(best[sel].mean()) if m else float("nan"),
        }
    counts, edges = np.histogram(best, bins=bins, range=(0.0, 1.0))
    return {
        "num_objects": n,
        "num_uncovered": int(uncovered.sum()),
        "fraction_uncovered": float(uncovered.mean()) if n else float("nan"),
        "best_iou": best,
        "best_anchor": iou.argmax(axis=1) if n else np.zeros(0, np.int64),
        "positives_per_object": (iou > threshold).sum(axis=1),
        "histogram": (counts, edges),
        "by_size": by_size,
        "threshold": threshold,
        "size_edges": tuple(size_edges),
    }
