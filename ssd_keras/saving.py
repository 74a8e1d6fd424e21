"""Saving and loading a detector: one `.keras` file holds everything.

An `SSDDetector`'s config carries its class names, `AnchorConfig`, image size, loss and
decoder settings and `metadata` (training data, held-out split), so `detector.save(path)`
writes the one file that `evaluate`, `predict` and `export` need, and `load_model(path)`
(plain `keras.saving.load_model` plus checks) reads it back. Exporting for serving is in
`ssd_keras.export`.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import keras

from ssd_keras.detector import SSDDetector

__all__ = ["load_model"]


def load_model(path, compile=False):
    """Load a saved `SSDDetector` from a `.keras` file; clear errors for anything else.

    `compile=False` by default: inference and export need no loss or optimizer (pass True
    to continue training with the saved optimizer state).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    if path.suffix != ".keras" or not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: expected a .keras file saved by SSDDetector.save")
    try:
        model = keras.saving.load_model(path, compile=compile)
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"{path}: could not load the model ({type(e).__name__}: {e})") from e
    if not isinstance(model, SSDDetector):
        raise ValueError(
            f"{path}: holds a {type(model).__name__}, not an SSDDetector. A raw build_ssd model "
            "has no class names or anchors: wrap the training in SSDDetector (see CHANGELOG.md, "
            "0.2.0) or load it with keras.saving.load_model yourself"
        )
    return model
