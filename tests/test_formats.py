"""COCO-json and CSV readers: agreement with the VOC reader, fixtures, bad input."""

import json
import os

import numpy as np
import pytest

from ssd_keras.data import SAMPLE_VOC, VOC_CLASSES, read_coco_json, read_csv, read_voc, write_csv

FIX = os.path.join(os.path.dirname(__file__), "fixtures")
SAMPLE_JSON = os.path.join(os.path.dirname(os.path.dirname(SAMPLE_VOC)), "voc2007_sample", "pascal_train2007.json")
IMAGES = os.path.join(SAMPLE_VOC, "JPEGImages")


def test_json_agrees_with_xml_on_sample():
    js = read_coco_json(SAMPLE_JSON, images_dir=IMAGES)
    xml = read_voc(SAMPLE_VOC, "train")
    assert js.class_names == VOC_CLASSES
    by_id = {r.image_id: r for r in xml.records}
    assert sorted(r.image_id for r in js.records) == sorted(by_id)
    for r in js.records:
        x = by_id[r.image_id]
        assert (r.width, r.height, r.path) == (x.width, x.height, x.path)
        np.testing.assert_array_equal(r.classes, x.classes)
        np.testing.assert_allclose(r.boxes, x.boxes, atol=1e-7)
    # The course's plain json has ignore = 0 everywhere; the _with_ignore copy flags difficult.
    assert not any(r.difficult.any() for r in js.records)
    ign = read_coco_json(SAMPLE_JSON.replace(".json", "_with_ignore.json"), images_dir=IMAGES)
    for r in ign.records:
        np.testing.assert_array_equal(r.difficult, by_id[r.image_id].difficult)
    easy = read_coco_json(SAMPLE_JSON.replace(".json", "_with_ignore.json"), images_dir=IMAGES, keep_difficult=False)
    assert easy.num_objects == xml.num_objects - 174


def test_json_default_images_dir_is_course_layout():
    # <json dir>/VOCdevkit/VOC2007/JPEGImages is absent next to the sample json; JPEGImages isn't either,
    # so the default falls back to the json's folder and the images are reported missing.
    with pytest.raises(ValueError, match="image file missing"):
        read_coco_json(SAMPLE_JSON)


def test_json_fixture():
    data = read_coco_json(os.path.join(FIX, "lesson.json"), images_dir=os.path.join(FIX, "voc", "VOC2007", "JPEGImages"))
    a, empty = data.records
    np.testing.assert_allclose(a.boxes, [[0, 0, 0.5, 0.5], [8 / 48, 0.25, 1, 1]], atol=1e-7)
    assert [VOC_CLASSES[c] for c in a.classes] == ["dog", "person"]
    assert a.difficult.tolist() == [False, True]  # ignore = 1 on the person
    assert empty.num_objects == 0
    assert read_coco_json(os.path.join(FIX, "lesson.json"), images_dir=os.path.join(FIX, "voc", "VOC2007", "JPEGImages"),
                          use_ignore=False).records[0].difficult.tolist() == [False, False]


def test_json_bad_input(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: cannot read COCO json"):
        read_coco_json(bad)
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="no 'annotations' key"):
        read_coco_json(bad)
    d = json.load(open(os.path.join(FIX, "lesson.json")))
    d["annotations"][0]["bbox"] = [0, 0, 100, 24]  # wider than the 64 px image
    d["annotations"][1]["category_id"] = 99
    bad.write_text(json.dumps(d))
    imgs = os.path.join(FIX, "voc", "VOC2007", "JPEGImages")
    with pytest.raises(ValueError, match=r"img_a.jpg.*unknown category_id 99"):
        read_coco_json(bad, images_dir=imgs)
    d["annotations"][1]["category_id"] = 15
    bad.write_text(json.dumps(d))
    with pytest.raises(ValueError, match=r"img_a.jpg.*outside the 64x48 image"):
        read_coco_json(bad, images_dir=imgs)
    skipped = read_coco_json(bad, images_dir=imgs, on_error="skip")
    assert [r.image_id for r in skipped.records] == ["img_empty"] and len(skipped.skipped) == 1


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(images={"1": d["images"][0]}), r"'images' must be a list of objects, got dict"),
    (lambda d: d["categories"][0].pop("name"), r"every category needs an 'id' and a 'name'"),
    (lambda d: d["images"][0].update(width=None), r"images\[0\]\): an image needs file_name, and width and height"),
    (lambda d: d["images"][0].update(height=0), r"images\[0\]\): an image needs file_name"),
    (lambda d: d["annotations"][0].update(bbox=[0, 0, 32]), r"img_a.jpg\): bbox must be 4 numbers \[x, y, width, height\], got \[0, 0, 32\]"),
    (lambda d: d["annotations"][0].update(bbox=[0, 0, "wide", 24]), r"bbox must be 4 numbers"),
    # ids as strings on one side and numbers on the other: nothing would match, silently.
    (lambda d: [a.update(image_id=str(a["image_id"])) for a in d["annotations"]],
     r"bad.json: 2 annotation\(s\) refer to an image_id that no image has \(e.g. '1'; image ids look like 1\); "
     r"no image would have an object"),
])
def test_json_malformed_fields_are_named(tmp_path, change, message):
    d = json.load(open(os.path.join(FIX, "lesson.json")))
    change(d)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(d))
    with pytest.raises(ValueError, match=message):
        read_coco_json(bad, images_dir=os.path.join(FIX, "voc", "VOC2007", "JPEGImages"))


def test_csv_fixture_matches_voc():
    data = read_csv(os.path.join(FIX, "lesson.csv"))
    assert data.class_names == VOC_CLASSES
    voc = read_voc(os.path.join(FIX, "voc", "VOC2007"), "train")
    for r, v in zip(data.records, voc.records):
        assert r.image_id == v.image_id and (r.width, r.height) == (v.width, v.height)
        np.testing.assert_allclose(r.boxes, v.boxes, atol=1e-7)
        np.testing.assert_array_equal(r.classes, v.classes)


def test_csv_round_trip_on_sample(tmp_path):
    xml = read_voc(SAMPLE_VOC, "train")
    path = tmp_path / "sample.csv"
    write_csv(xml, path, images_dir=IMAGES)
    first = path.read_text().splitlines()[:2]
    assert first[0] == "fn,bbox,clas"
    back = read_csv(path, images_dir=IMAGES)
    assert back.class_names == VOC_CLASSES and len(back) == len(xml)
    for r, x in zip(back.records, xml.records):
        np.testing.assert_allclose(r.boxes, x.boxes, atol=1e-6)
        np.testing.assert_array_equal(r.classes, x.classes)
    row12 = next(line for line in path.read_text().splitlines() if line.startswith("000012.jpg"))
    assert row12 == "000012.jpg,96 155 269 350,car"  # the course's hw_bb: 0-based inclusive tlbr


def test_csv_bad_input(tmp_path):
    imgs = os.path.join(FIX, "voc", "VOC2007", "JPEGImages")
    p = tmp_path / "x.csv"
    p.write_text("fn,boxes\na.jpg,1 2 3 4\n")
    with pytest.raises(ValueError, match="expected columns 'fn' and 'bbox'"):
        read_csv(p)
    p.write_text("fn,bbox\na.jpg,1 2 3 4\n")
    with pytest.raises(ValueError, match="no class column"):
        read_csv(p)
    cases = {
        "img_a.jpg,0 0 23,dog": "3 bbox numbers for 1 class labels",
        "img_a.jpg,0 0 23 31,unicorn": "unknown class name 'unicorn'",
        "img_a.jpg,0 0 23 x,dog": "non-numeric bbox",
        "img_a.jpg,0 40 23 31,dog": "xmax < xmin",
        "img_a.jpg,48 0 48 31,dog": r"is empty once clipped to the 64x48 image",  # a row below the last
        "img_a.jpg,-1 -1 -1 -1,dog": r"is empty once clipped to the 64x48 image",
        "bad_zero.jpg,0 0 23 31,dog": "empty",
        "bad_corrupt.jpg,0 0 23 31,dog": "truncated JPEG",
        "nothere.jpg,0 0 23 31,dog": "image file missing",
    }
    for row, msg in cases.items():
        p.write_text("fn,bbox,clas\n" + row + "\n")
        with pytest.raises(ValueError, match=msg):
            read_csv(p, images_dir=imgs, class_names=VOC_CLASSES)
    # Skipped: each bad row, then each bad image among the rest (img_a's bad rows already drop it,
    # so its box problems are not reached).
    p.write_text("fn,bbox,clas\n" + "\n".join(cases) + "\nimg_empty.jpg,0 0 23 31,11\n")
    data = read_csv(p, images_dir=imgs, class_names=VOC_CLASSES, on_error="skip")
    assert [reason.split(" (")[0].split(" '")[0] for _, reason in data.skipped] == [
        "3 bbox numbers for 1 class labels", "unknown class name", "non-numeric bbox",
        "image file is empty", "truncated JPEG", "image file missing"]
    assert len(data) == 1
    assert data.records[0].classes.tolist() == [11]  # integer labels are ids
    # The last row of pixels is a box; ids without names are not guessed.
    p.write_text("fn,bbox,clas\nimg_a.jpg,47 0 47 31,dog\n")
    np.testing.assert_allclose(read_csv(p, images_dir=imgs).records[0].boxes, [[47 / 48, 0.0, 1.0, 0.5]])
    p.write_text("fn,bbox,clas\nimg_a.jpg,0 0 23 31,1\n")
    with pytest.raises(ValueError, match="the class column holds integer ids; give the class names"):
        read_csv(p, images_dir=imgs)


def test_csv_as_spreadsheets_write_it(tmp_path):
    imgs = os.path.join(FIX, "voc", "VOC2007", "JPEGImages")
    p = tmp_path / "x.csv"
    p.write_bytes("\ufefffn,bbox,clas\r\nimg_a.jpg,0 0 23 31,mug\r\n".encode("utf-8"))  # BOM, CRLF
    assert read_csv(p, images_dir=imgs).class_names == ("mug",)
    p.write_text("fn,bbox,clas\n")
    with pytest.raises(ValueError, match="x.csv: no data rows under the header"):
        read_csv(p, images_dir=imgs)


def test_csv_rows_naming_the_same_file_are_one_image(tmp_path):
    """One row per object (other tools' form) reads as the lecture's one row per image; as
    separate records an image would leak into the held-out part with its other objects missing."""
    imgs = os.path.join(FIX, "voc", "VOC2007", "JPEGImages")
    one_per_object = tmp_path / "objects.csv"
    one_per_object.write_text("fn,bbox,clas\nimg_a.jpg,0 0 23 31,mug\nimg_a.jpg,8 16 47 63,spoon\n")
    one_per_image = tmp_path / "images.csv"
    one_per_image.write_text("fn,bbox,clas\nimg_a.jpg,0 0 23 31 8 16 47 63,mug spoon\n")
    a, b = read_csv(one_per_object, images_dir=imgs), read_csv(one_per_image, images_dir=imgs)
    assert len(a) == len(b) == 1
    # Each row is checked alone: 8 numbers for 1 label, then 0 for 1, is not 8 for 2.
    odd = tmp_path / "odd.csv"
    odd.write_text("fn,bbox,clas\nimg_a.jpg,0 0 23 31 8 16 47 63,mug\nimg_a.jpg,,spoon\n")
    with pytest.raises(ValueError, match=r"odd.csv:2 \(img_a.jpg\): 8 bbox numbers for 1 class labels"):
        read_csv(odd, images_dir=imgs)
    skipped = read_csv(odd, images_dir=imgs, on_error="skip")
    assert len(skipped) == 0 and [w.split(": ")[0] for w, _ in skipped.skipped] == [f"{odd}:2 (img_a.jpg)",
                                                                                     f"{odd}:3 (img_a.jpg)"]
    np.testing.assert_array_equal(a.records[0].boxes, b.records[0].boxes)
    assert list(a.records[0].classes) == list(b.records[0].classes) == [0, 1]


def test_json_category_names_numbers_and_repeats(tmp_path):
    d = json.load(open(os.path.join(FIX, "lesson.json")))
    d["categories"] = [{"id": 12, "name": 5}, {"id": 15, "name": "mug"}]
    bad = tmp_path / "cats.json"
    bad.write_text(json.dumps(d))
    imgs = os.path.join(FIX, "voc", "VOC2007", "JPEGImages")
    assert read_coco_json(bad, images_dir=imgs).class_names == ("5", "mug")  # a number names a class too
    d["categories"] = [{"id": 12, "name": "mug"}, {"id": 15, "name": "mug"}]
    bad.write_text(json.dumps(d))
    with pytest.raises(ValueError, match=r"cats.json: categories \[12, 15\] share the name 'mug'"):
        read_coco_json(bad, images_dir=imgs)


def test_json_numeric_strings_and_a_subset_of_the_images(tmp_path, caplog):
    d = json.load(open(os.path.join(FIX, "lesson.json")))
    imgs = os.path.join(FIX, "voc", "VOC2007", "JPEGImages")
    want = read_coco_json(os.path.join(FIX, "lesson.json"), images_dir=imgs)
    d["annotations"][0]["bbox"] = [str(v) for v in d["annotations"][0]["bbox"]]  # numpy read these before
    d["annotations"].append(dict(d["annotations"][1], id=3, image_id=99))  # an image left out of the file
    path = tmp_path / "subset.json"
    path.write_text(json.dumps(d))
    with caplog.at_level("WARNING", logger="ssd_keras.data"):
        got = read_coco_json(path, images_dir=imgs)
    assert "1 annotation(s) refer to an image_id that no image has (e.g. 99" in caplog.text
    assert not got.skipped
    for a, b in zip(got.records, want.records):
        np.testing.assert_array_equal(a.boxes, b.boxes)
