"""Record / DetectionData / error policy / image checks."""

import os

import numpy as np
import pytest

from ssd_keras.data import SAMPLE_VOC, DetectionData, Record, load_source, multi_labels
from ssd_keras.data.records import ErrorPolicy, check_image_bytes, check_image_file

JPEGS = os.path.join(os.path.dirname(__file__), "fixtures", "voc", "VOC2007", "JPEGImages")


def test_record_normalises_and_checks_lengths():
    r = Record("x", None, [0.1, 0.2, 0.3, 0.4], [2], [0], 10, 20, image=np.zeros((20, 10, 3), np.uint8))
    assert r.boxes.shape == (1, 4) and r.boxes.dtype == np.float32 and r.classes.dtype == np.int32
    assert r.difficult.tolist() == [False] and r.truncated.tolist() == [False] and r.num_objects == 1
    np.testing.assert_allclose(r.pixel_boxes(), [[2, 2, 6, 4]], rtol=1e-6)  # yxyx * (H, W, H, W)
    assert r.load_image() is r.image
    with pytest.raises(ValueError, match="x: boxes/classes/difficult lengths differ"):
        Record("x", None, [[0.1, 0.2, 0.3, 0.4]], [1, 2], [0], 10, 10)


def test_multi_labels_and_helpers():
    voc = load_source(f"voc:{SAMPLE_VOC}", split="train")
    mc = voc.multi_labels()  # the lesson's `mc`
    i12 = [r.image_id for r in voc.records].index("000012")
    assert mc[i12] == {"car"}
    assert all(len(m) <= r.num_objects for m, r in zip(mc, voc.records))
    assert multi_labels(voc.records[:1], voc.class_names) == mc[:1]
    assert voc.class_to_id["car"] == 6
    gts = voc.ground_truths()
    assert len(gts) == 200 and gts[i12][0].shape == (1, 4)
    a, b = voc.split(0.8, seed=0)
    assert isinstance(a, DetectionData) and len(a) == 160 and len(b) == 40
    assert not {r.image_id for r in a.records} & {r.image_id for r in b.records}
    assert "200 images, 718 objects (174 difficult)" in voc.summary()
    x = voc.records[i12].load_image()
    assert x.shape == (333, 500, 3) and x.dtype == np.uint8


def test_error_policy(caplog):
    with pytest.raises(ValueError, match="a.xml: broken .pass on_error='skip'"):
        ErrorPolicy("raise").problem("a.xml", "broken")
    p = ErrorPolicy("skip")
    p.problem("a.xml", "broken")
    p.problem("b.xml", "worse")
    with caplog.at_level("WARNING", logger="ssd_keras.data"):
        p.finish("reader")
    assert p.skipped == [("a.xml", "broken"), ("b.xml", "worse")] and "skipped 2 image(s)" in caplog.text


def test_check_image_file():
    ok = os.path.join(JPEGS, "img_a.jpg")
    assert check_image_file(ok) is None and check_image_file(ok, (64, 48)) is None
    assert "40x40 but the annotation says 64x48" in check_image_file(os.path.join(JPEGS, "bad_size.jpg"), (64, 48))
    assert "truncated JPEG" in check_image_file(os.path.join(JPEGS, "bad_corrupt.jpg"))
    assert "0 bytes" in check_image_file(os.path.join(JPEGS, "bad_zero.jpg"))
    assert "missing" in check_image_file(os.path.join(JPEGS, "nope.jpg"))
    assert "not a readable image" in check_image_file(os.path.join(os.path.dirname(JPEGS), "Annotations", "img_a.xml"))


def test_check_image_bytes_reads_the_header_of_in_memory_images():
    data = open(os.path.join(JPEGS, "img_a.jpg"), "rb").read()
    assert check_image_bytes(data) is None
    assert check_image_bytes(b"") == "empty (0 bytes)"
    assert check_image_bytes(b"GIF89a-but-no-more").startswith("not a readable image")
    assert check_image_bytes(b"<html></html>") == "not a readable image (no known image format; it starts with b'<html></')"
    assert check_image_bytes(data[:-64]) == "truncated JPEG (no end-of-image marker)"


def test_data_after_a_jpegs_end_marker_is_not_truncation(tmp_path):
    """Zero padding or a trailer after the end-of-image marker: TensorFlow decodes such a file,
    so neither check may refuse it (the marker was once looked for in the last 32 bytes)."""
    import tensorflow as tf

    data = open(os.path.join(JPEGS, "img_a.jpg"), "rb").read() + bytes(100)
    tf.io.decode_image(data, channels=3)  # the pipeline's decoder takes it
    assert check_image_bytes(data) is None
    path = tmp_path / "padded.jpg"
    path.write_bytes(data)
    assert check_image_file(str(path)) is None and check_image_file(str(path), decode=False) is None


def test_check_image_file_asks_tensorflows_decoder(tmp_path):
    """What PIL reads but the pipeline's `tf.io.decode_image` does not is caught at read time."""
    from PIL import Image

    ok = os.path.join(JPEGS, "img_a.jpg")
    Image.open(ok).save(tmp_path / "a.tif")
    assert "a TIFF image; TensorFlow decodes only JPEG, PNG, GIF, BMP and WebP" in check_image_file(
        str(tmp_path / "a.tif"))
    for fmt in ("png", "bmp", "gif", "webp"):
        Image.open(ok).save(tmp_path / f"a.{fmt}")
        assert check_image_file(str(tmp_path / f"a.{fmt}")) is None, fmt
    # A phone's multi-picture JPEG: PIL says MPO, TensorFlow decodes it as the JPEG it starts with.
    Image.open(ok).save(tmp_path / "phone.jpg", format="MPO", save_all=True, append_images=[Image.open(ok)])
    assert Image.open(tmp_path / "phone.jpg").format == "MPO"
    assert check_image_file(str(tmp_path / "phone.jpg"), (64, 48)) is None
    # A zeroed Huffman table: the header and the end marker still read.
    data = bytearray(open(ok, "rb").read())
    dht = data.index(b"\xff\xc4")
    data[dht + 2:dht + 40] = bytes(38)
    (tmp_path / "mid.jpg").write_bytes(bytes(data))
    with Image.open(tmp_path / "mid.jpg") as im:
        assert im.size == (64, 48)  # the header still reads
    assert check_image_file(str(tmp_path / "mid.jpg")) == (
        "TensorFlow cannot decode it (jpeg::Uncompress failed. Invalid JPEG data or crop window.)")
    # decode=False: the header checks alone (make_dataset's, for records made by hand).
    assert check_image_file(str(tmp_path / "mid.jpg"), decode=False) is None
    assert "truncated JPEG" in check_image_file(os.path.join(JPEGS, "bad_corrupt.jpg"), decode=False)
    assert "missing" in check_image_file(os.path.join(JPEGS, "nope.jpg"), decode=False)


def test_check_image_file_names_an_image_too_large_to_decode(tmp_path):
    """A PNG header claiming 20000 x 20000 pixels: PIL's decompression-bomb guard, not an OSError."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    assert check_image_file(str(bomb)).startswith("too large to decode safely (Image size (400000000 pixels)")


def test_path_like_paths_and_in_memory_images_as_load_image_reads_them():
    import pathlib

    r = Record("a", pathlib.Path(JPEGS) / "img_a.jpg", [[0.1, 0.1, 0.5, 0.5]], [0], [False], 64, 48)
    assert r.path == os.path.join(JPEGS, "img_a.jpg") and isinstance(r.path, str)
    assert r.load_image().shape == (48, 64, 3)
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    rgb = Record("g", None, [[0.1, 0.1, 0.5, 0.5]], [0], [False], 4, 3, image=grey).load_image()
    assert rgb.shape == (3, 4, 3) and rgb.dtype == np.uint8 and (rgb == grey[..., None]).all()
    rgba = np.zeros((3, 4, 4), np.uint8)
    assert Record("a", None, np.zeros((0, 4)), [], [], 4, 3, image=rgba).load_image().shape == (3, 4, 3)
    with pytest.raises(ValueError, match=r"record 'f'.*floats in \[0, 1\]\? multiply by 255"):
        Record("f", None, np.zeros((0, 4)), [], [], 4, 3, image=np.full((3, 4, 3), 0.5)).load_image()
