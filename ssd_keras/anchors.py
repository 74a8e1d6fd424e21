"""Anchor boxes: the lesson's `anchors`, `grid_sizes` and `anchor_cnr`, as one config object.

The lesson builds anchors as module-level globals; here they live in `AnchorConfig`, which is
passed to the head (how many anchors per cell), the loss (matching), the decoder and the
evaluation. It is plain data (`get_config` / `from_config`), so models and losses that hold it
save and load.
"""

from __future__ import annotations

import numpy as np

from ssd_keras.boxes import centers_to_corners


class AnchorConfig:
    """Anchors on several square grids, with zooms and aspect ratios.

    Args:
        grids: grid sizes, coarse order as in the lesson, e.g. `(4, 2, 1)`.
        zooms: anchor scale multipliers relative to a grid cell.
        ratios: `(h, w)` multipliers, e.g. `((1, 1), (1, .5), (.5, 1))`.

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
        self.grids = tuple(int(g) for g in _as_sequence(grids, "grids"))
        self.zooms = tuple(float(z) for z in _as_sequence(zooms, "zooms"))
        self.ratios = tuple(
            (float(r[0]), float(r[1])) for r in _as_sequence(ratios, "ratios")
        )
        if any(g < 1 for g in self.grids):
            raise ValueError(f"AnchorConfig: grids must be positive integers, got {grids!r}")
        if any(not z > 0 for z in self.zooms):
            raise ValueError(f"AnchorConfig: zooms must be > 0, got {zooms!r}")
        if any(len(r) != 2 for r in _as_sequence(ratios, "ratios")) or any(
            not (h > 0 and w > 0) for h, w in self.ratios
        ):
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
