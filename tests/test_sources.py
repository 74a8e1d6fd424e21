"""load_source: names, bare paths, tfds offline with a clear message; DetectionData helpers."""

import os

import numpy as np
import pytest

from ssd_keras.data import SAMPLE_VOC, DetectionData, SourceUnavailable, load_source, make_shapes, read_tfds, sources
from ssd_keras.data.shapes import ShapesData

SAMPLE_JSON = os.path.join(os.path.dirname(SAMPLE_VOC), "pascal_train2007.json")
FIX = os.path.join(os.path.dirname(__file__), "fixtures")


def test_specs_and_bare_paths():
    voc = load_source(f"voc:{SAMPLE_VOC}", split="train")
    assert isinstance(voc, DetectionData) and len(voc) == 200 and voc.num_classes == 20
    assert len(load_source(SAMPLE_VOC, split="train")) == 200  # a folder is VOC
    coco = load_source(f"coco:{SAMPLE_JSON}", images_dir=os.path.join(SAMPLE_VOC, "JPEGImages"))
    assert len(coco) == 200 and coco.num_objects == voc.num_objects
    csv = load_source(os.path.join(FIX, "lesson.csv"))
    assert len(csv) == 2
    with pytest.raises(ValueError, match="unknown data source 'imagenet'.*voc:/path/to/VOCdevkit/VOC2007"):
        load_source("imagenet")
    with pytest.raises(ValueError, match="one split"):
        load_source(f"coco:{SAMPLE_JSON}", split="val")


def test_tfds_not_prepared_names_local_alternative(tmp_path):
    with pytest.raises(SourceUnavailable) as e:
        load_source("tfds:voc/2007", data_dir=str(tmp_path))
    msg = str(e.value)
    assert "voc:/path/to/VOCdevkit/VOC2007" in msg and "not prepared" in msg and str(tmp_path) in msg


def test_tfds_download_failure_is_clear(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    def offline(self, *a, **k):
        raise ConnectionError("Failed to resolve 'host.robots.ox.ac.uk'")

    # Simulate no network: the builder's download step fails; nothing is fetched.
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
    with pytest.raises(SourceUnavailable) as e:
        read_tfds("voc/2007", data_dir=str(tmp_path), download=True)
    msg = str(e.value)
    assert "download failed (ConnectionError" in msg and "voc:/path/to/VOCdevkit/VOC2007" in msg
    assert e.value.__cause__ is None  # no download stack trace chained on


def test_tfds_prepared_maps_to_same_records(monkeypatch):
    """A fake prepared builder with VOC's features: boxes become `read_voc`'s numbers."""
    import io

    import tensorflow_datasets as tfds
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((333, 500, 3), np.uint8)).save(buf, format="JPEG")

    class FakeBuilder:
        info = type("I", (), {"features": {"objects": {"label": tfds.features.ClassLabel(names=sources.VOC_CLASSES)}}})()

        def is_prepared(self):
            return True

        def as_dataset(self, split, decoders):
            assert split == "train+validation"
            return [{"image": buf.getvalue(), "image/filename": b"000012.jpg",
                     "objects": {"bbox": np.array([[97 / 333, 156 / 500, 270 / 333, 351 / 500]], np.float32),
                                 "label": np.array([6]), "is_difficult": np.array([False]),
                                 "is_truncated": np.array([True])}}]

    monkeypatch.setattr(tfds, "builder", lambda name, data_dir=None: FakeBuilder())
    monkeypatch.setattr(tfds, "as_numpy", lambda ds: ds)
    data = load_source("tfds:voc/2007", split="trainval")
    voc = next(r for r in load_source(f"voc:{SAMPLE_VOC}", split="train").records if r.image_id == "000012")
    rec = data.records[0]
    assert rec.image_id == "000012" and (rec.width, rec.height) == (500, 333) and isinstance(rec.image, bytes)
    np.testing.assert_allclose(rec.boxes, voc.boxes, atol=1e-6)
    assert rec.classes.tolist() == [6] and rec.truncated.tolist() == [True]


def test_shapes_source_is_generated_on_demand():
    data = load_source("shapes:6", split="val", image_size=32, seed=2, max_objects=3)
    assert isinstance(data, ShapesData) and isinstance(data, DetectionData)
    assert len(data) == 6 and data.name == "shapes:val"
    eager = make_shapes(6, image_size=32, split="val", seed=2, max_objects=3)
    np.testing.assert_array_equal(data.records[5].image, eager.records[5].image)
    assert data.summary() == eager.summary()
    assert len(load_source("shapes", image_size=32)) == 1000  # make_shapes' default count
    with pytest.raises(ValueError, match="shapes:N takes a number of images"):
        load_source("shapes:many")
