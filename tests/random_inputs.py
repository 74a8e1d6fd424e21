"""Random test inputs shared by the box, matching and loss tests."""

import numpy as np


def random_boxes(rng, n, hw=(0.02, 0.7)):
    """`n` relative yxyx boxes of varied size inside the image (side fractions in `hw`)."""
    tl = rng.uniform(0, 0.9, (n, 2))
    size = rng.uniform(hw[0], hw[1], (n, 2))
    return np.concatenate([tl, np.minimum(tl + size, 1.0)], 1).astype(np.float32)
