"""VOC reader: real sample vs an independent regex parse, the 000012 facts, fixtures, bad input."""

import os
import re
from fractions import Fraction

import numpy as np
import pytest

from ssd_keras.data import SAMPLE_VOC, VOC_CLASSES, parse_voc_xml, read_voc, relative_to_voc, voc_to_relative

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "voc", "VOC2007")
SHARED_XML = os.path.join(os.path.dirname(__file__), "fixtures", "voc_xml_genuine")


def _regex_parse(xml_text):
    """Independent of the reader: plain regexes over the XML text."""
    objs = re.findall(r"<object>(.*?)</object>", xml_text, re.S)
    out = []
    for o in objs:
        name = re.search(r"<name>\s*(\w+)\s*</name>", o).group(1)
        diff = int(re.search(r"<difficult>\s*(\d)\s*</difficult>", o).group(1))
        box = [int(re.search(rf"<{t}>\s*(\d+)\s*</{t}>", o).group(1)) for t in ("xmin", "ymin", "xmax", "ymax")]
        out.append((name, diff, box))
    w = int(re.search(r"<width>(\d+)</width>", xml_text).group(1))
    h = int(re.search(r"<height>(\d+)</height>", xml_text).group(1))
    return w, h, out


def test_voc_classes_standard_order():
    assert len(VOC_CLASSES) == 20
    assert VOC_CLASSES[0] == "aeroplane" and VOC_CLASSES[6] == "car" and VOC_CLASSES[14] == "person"
    assert list(VOC_CLASSES) == sorted(VOC_CLASSES)  # the devkit's order is alphabetical


def test_sample_counts_match_independent_parse():
    data = read_voc(SAMPLE_VOC, split="train")
    with open(os.path.join(SAMPLE_VOC, "ImageSets", "Main", "train.txt")) as f:
        ids = [line.strip() for line in f if line.strip()]
    assert [r.image_id for r in data.records] == ids and len(ids) == 200
    n_obj, n_diff, per_class = 0, 0, np.zeros(20, int)
    for r in data.records:
        with open(os.path.join(SAMPLE_VOC, "Annotations", r.image_id + ".xml")) as f:
            w, h, objs = _regex_parse(f.read())
        assert (r.width, r.height) == (w, h)
        assert [VOC_CLASSES[c] for c in r.classes] == [o[0] for o in objs]
        assert r.difficult.tolist() == [bool(o[1]) for o in objs]
        px = np.array([o[2] for o in objs], float).reshape(-1, 4)
        np.testing.assert_allclose(r.boxes, np.stack([(px[:, 1] - 1) / h, (px[:, 0] - 1) / w,
                                                      px[:, 3] / h, px[:, 2] / w], 1), atol=1e-7)
        n_obj += len(objs)
        n_diff += sum(o[1] for o in objs)
        for o in objs:
            per_class[VOC_CLASSES.index(o[0])] += 1
    assert data.num_objects == n_obj == 718 and n_diff == 174
    assert sum(int(r.difficult.sum()) for r in data.records) == n_diff
    got = np.bincount(np.concatenate([r.classes for r in data.records]), minlength=20)
    np.testing.assert_array_equal(got, per_class)
    assert (per_class > 0).all()  # every class occurs in the sample
    # The per-class lists (genuine VOC files, filtered) agree on which images hold each class.
    for ci, cls in enumerate(VOC_CLASSES):
        with open(os.path.join(SAMPLE_VOC, "ImageSets", "Main", f"{cls}_train.txt")) as f:
            flags = {line.split()[0]: int(line.split()[1]) for line in f}
        has = {r.image_id for r in data.records if ci in r.classes[~r.difficult]}
        assert has == {i for i, v in flags.items() if v == 1}, cls


def test_000012_facts():
    rec = next(r for r in read_voc(SAMPLE_VOC, "train").records if r.image_id == "000012")
    assert (rec.width, rec.height) == (500, 333)
    assert [VOC_CLASSES[c] for c in rec.classes] == ["car"]
    # VOC (xmin, ymin, xmax, ymax) = (156, 97, 351, 270), 1-based inclusive -> [min - 1, max] / size.
    expect = [float(Fraction(96, 333)), float(Fraction(155, 500)), float(Fraction(270, 333)), float(Fraction(351, 500))]
    np.testing.assert_allclose(rec.boxes[0], expect, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(relative_to_voc(rec.boxes, 500, 333), [[156, 97, 351, 270]])
    from PIL import Image

    with Image.open(rec.path) as im:
        assert im.size == (500, 333)


def test_keep_difficult_false_drops_only_difficult():
    all_ = read_voc(SAMPLE_VOC, "train")
    easy = read_voc(SAMPLE_VOC, "train", keep_difficult=False)
    assert len(easy) == len(all_)  # images with only difficult objects stay (no targets)
    assert easy.num_objects == all_.num_objects - 174
    assert not any(r.difficult.any() for r in easy.records)


def test_fixture_record_and_truncated():
    data = read_voc(FIX, split="train")
    a, empty = data.records
    assert a.image_id == "img_a" and (a.width, a.height) == (64, 48)
    assert [VOC_CLASSES[c] for c in a.classes] == ["dog", "person"]
    np.testing.assert_allclose(a.boxes, [[0, 0, 0.5, 0.5], [8 / 48, 0.25, 1, 1]], atol=1e-7)
    assert a.truncated.tolist() == [True, False] and a.difficult.tolist() == [False, True]
    assert empty.num_objects == 0 and empty.boxes.shape == (0, 4)


def test_root_forms_and_split_none():
    parent = os.path.dirname(FIX)
    assert len(read_voc(parent, split="train")) == 2  # VOCdevkit-style parent folder
    with pytest.raises(FileNotFoundError, match="available:.*train"):
        read_voc(FIX, split="nosuchsplit")
    with pytest.raises(FileNotFoundError, match="not a VOC devkit"):
        read_voc(os.path.dirname(parent))
    allxml = read_voc(FIX, split=None, on_error="skip")
    assert {r.image_id for r in allxml.records} == {"img_a", "img_empty"}


def test_genuine_voc_xml_fields():
    a = parse_voc_xml(os.path.join(SHARED_XML, "000001.xml"))
    assert (a["width"], a["height"]) == (353, 500) and a["names"] == ["dog", "person"]
    np.testing.assert_array_equal(a["boxes_px"], [[48, 240, 195, 371], [8, 12, 352, 498]])
    assert a["truncated"].tolist() == [True, True] and a["difficult"].tolist() == [False, False]
    b = parse_voc_xml(os.path.join(SHARED_XML, "000002.xml"))
    assert b["names"] == ["train"] and b["boxes_px"].tolist() == [[139, 200, 207, 301]]


def test_voc_to_relative_round_trip():
    px = np.array([[1, 1, 500, 333], [156, 97, 351, 270]])
    rel = voc_to_relative(px, 500, 333)
    np.testing.assert_allclose(rel[0], [0, 0, 1, 1])
    np.testing.assert_array_equal(relative_to_voc(rel, 500, 333), px)


BAD = {
    "bad_unknown": ("bad_unknown.xml", "unknown class name 'unicorn'"),
    "bad_inverted": ("bad_inverted.xml", "xmax < xmin"),
    "bad_outside": ("bad_outside.xml", "outside the 64x48 image"),
    "bad_corrupt": ("bad_corrupt.jpg", "truncated JPEG"),
    "bad_zero": ("bad_zero.jpg", "empty"),
    "bad_missing": ("bad_missing.jpg", "image file missing"),
    "bad_size": ("bad_size.jpg", "40x40 but the annotation says 64x48"),
    "bad_malformed": ("bad_malformed.xml", "malformed XML"),
    "bad_entity": ("bad_entity.xml", "unsafe XML refused"),
    "bad_noxml": ("bad_noxml.xml", "annotation file missing"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_raises_naming_the_file(case):
    fname, msg = BAD[case]
    with pytest.raises(ValueError) as e:
        read_voc(FIX, split=case)
    assert fname in str(e.value) and msg in str(e.value), str(e.value)


def test_bad_input_skip_counts_and_logs(caplog):
    with caplog.at_level("WARNING", logger="ssd_keras.data"):
        data = read_voc(FIX, split="trainval", on_error="skip")
    assert [r.image_id for r in data.records] == ["img_a", "img_empty"]
    assert len(data.skipped) == len(BAD)
    assert {os.path.basename(f) for f, _ in data.skipped} == {v[0] for v in BAD.values()}
    assert f"skipped {len(BAD)} image(s)" in caplog.text
    with pytest.raises(ValueError, match="on_error"):
        read_voc(FIX, on_error="ignore")


def test_class_names_auto_and_given():
    # bad_unknown.xml names a "unicorn": an error by default, a class of its own with "auto".
    own = read_voc(FIX, split="bad_unknown", class_names="auto")
    assert own.class_names == ("unicorn",)
    assert [own.class_names[c] for c in own.records[0].classes] == ["unicorn"]
    # Every name a VOC name: "auto" keeps the 20 VOC names in VOC order (ids as a VOC model's).
    voc = read_voc(FIX, split="train", class_names="auto")
    assert voc.class_names == VOC_CLASSES
    np.testing.assert_array_equal(voc.records[0].classes, [VOC_CLASSES.index("dog"), VOC_CLASSES.index("person")])
    # Given names: id = position; a name outside them is bad input.
    given = read_voc(FIX, split="train", class_names=("person", "dog"))
    np.testing.assert_array_equal(given.records[0].classes, [1, 0])
    with pytest.raises(ValueError, match="img_a.xml.*unknown class name 'dog'"):
        read_voc(FIX, split="train", class_names=("person",))
    with pytest.raises(ValueError, match="class_names must be a list of names or 'auto'"):
        read_voc(FIX, split="train", class_names="voc")


def test_pixel_boxes_left_empty_by_clipping_are_named():
    from ssd_keras.data.voc import check_pixel_boxes

    # VOC pixels are 1-based: 64 is the last column of a 64-wide image, 65 the overshoot allowed.
    assert check_pixel_boxes([[64, 1, 64, 48]], 64, 48) is None  # the last column: one pixel wide
    assert check_pixel_boxes([[65, 1, 65, 48]], 64, 48) == (
        "box [65.0, 1.0, 65.0, 48.0] is empty once clipped to the 64x48 image")
    assert "is empty once clipped" in check_pixel_boxes([[1, 0, 30, 0]], 64, 48)  # the row above the first
    assert "lies outside" in check_pixel_boxes([[1, 1, 30, 50]], 64, 48)
