"""ssd_keras.data.splits: training vs held-out part of a source; the held-out part found again from
the record the model keeps; splits a source cannot honour are errors."""

import os
import shutil

import pytest

from ssd_keras.data import SAMPLE_VOC
from ssd_keras.data.splits import has_split, held_out, load_train_val


def test_shapes_uses_its_val_stream_and_finds_it_again():
    kw = dict(count=20, image_size=32, seed=3)
    train, val, record = load_train_val("shapes", reader_kwargs=kw, val_reader_kwargs=dict(kw, count=7))
    assert (len(train), len(val)) == (20, 7)
    assert record == {"data": "shapes", "train_split": "train",
                      "val": {"kind": "split", "split": "val", "count": 7}}
    again = held_out("shapes", record, image_size=32, seed=3)
    assert [r.boxes.tolist() for r in again.records] == [r.boxes.tolist() for r in val.records]


def test_a_single_set_file_holds_out_a_seeded_fraction(tmp_path):
    from ssd_keras.data import load_source, write_csv

    data = load_source(f"voc:{SAMPLE_VOC}", split="train")
    csv = tmp_path / "d.csv"
    write_csv(data, csv)
    train, val, record = load_train_val(f"csv:{csv}", val_fraction=0.25, seed=1)
    assert record["val"] == {"kind": "fraction", "fraction": 0.25, "seed": 1, "of": len(data)}
    assert len(val) == round(0.25 * len(data)) and len(train) + len(val) == len(data)
    assert not {r.image_id for r in train.records} & {r.image_id for r in val.records}
    again = held_out(f"csv:{csv}", record)
    assert [r.image_id for r in again.records] == [r.image_id for r in val.records]
    # Another list of images would be cut elsewhere and hold out training images: refused.
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ValueError, match=rf"now reads as {len(data) - 1} images, but the held-out part was "
                                         rf"cut from {len(data)}; it cannot be found again"):
        held_out(f"csv:{csv}", record)
    with pytest.raises(ValueError, match="one set of images and has no split 'val'"):
        load_train_val(f"csv:{csv}", val_split="val")


def test_a_fraction_that_holds_out_no_image_is_an_error(tmp_path):
    from ssd_keras.data import load_source, write_csv

    data = load_source(f"voc:{SAMPLE_VOC}", split="train")
    data.records = data.records[:4]
    csv = tmp_path / "four.csv"
    write_csv(data, csv)
    with pytest.raises(ValueError, match=r"--val-fraction 0.1 of 4 image\(s\) holds out none; pass a larger "
                                         r"--val-fraction, or --val-split none"):
        load_train_val(f"csv:{csv}", val_fraction=0.1)
    train, val, _ = load_train_val(f"csv:{csv}", val_fraction=0.25)
    assert (len(train), len(val)) == (3, 1)


def test_voc_without_the_val_images_falls_back_to_a_fraction(tmp_path):
    """A devkit copy with the genuine val.txt but only the train images (like the course data)."""
    root = tmp_path / "VOC2007"
    shutil.copytree(SAMPLE_VOC, root)
    main = root / "ImageSets" / "Main"
    (main / "val.txt").write_text("\r\n".join(["009990", "009991"]) + "\r\n")  # CRLF, as shipped
    assert has_split(f"voc:{root}", "train") and not has_split(f"voc:{root}", "val")
    train, val, record = load_train_val(f"voc:{root}", val_fraction=0.2)
    assert record["val"]["kind"] == "fraction" and len(val) > 0
    with pytest.raises(ValueError, match="val.txt lists no image whose annotation is in Annotations/"):
        load_train_val(f"voc:{root}", val_split="val")


def test_held_out_needs_a_record_for_that_source():
    with pytest.raises(ValueError, match="records no held-out part of 'shapes'"):
        held_out("shapes", None)
    record = {"data": "voc:/x", "train_split": "train", "val": {"kind": "fraction", "fraction": 0.1, "seed": 0}}
    with pytest.raises(ValueError, match="it was trained on 'voc:/x'"):
        held_out("shapes", record)
    # Trained on all of a CSV: a CSV has no other split to name than all.
    record = {"data": "csv:d.csv", "train_split": None, "val": {"kind": "none"}}
    with pytest.raises(ValueError, match=r"of 'csv:d.csv' \(it was trained on all of it: --val-split none\); "
                                         r"name a split instead \(--split all\)"):
        held_out("csv:d.csv", record)
    assert os.path.isdir(SAMPLE_VOC)


def test_a_byte_order_mark_in_a_split_list_is_not_part_of_an_id(tmp_path):
    root = tmp_path / "VOC2007"
    shutil.copytree(SAMPLE_VOC, root)
    main = root / "ImageSets" / "Main"
    ids = (main / "train.txt").read_text().split()
    (main / "train.txt").write_bytes(("\ufeff" + "\r\n".join(ids) + "\r\n").encode("utf-8"))  # Notepad's way
    train, _, _ = load_train_val(f"voc:{root}", val_fraction=0.2)
    assert len(train) + round(0.2 * len(ids)) == len(ids)
    (main / "train.txt").write_text("")
    with pytest.raises(ValueError, match=r"train.txt lists no image whose annotation is in Annotations/"):
        load_train_val(f"voc:{root}")


def test_no_image_left_to_train_on_says_why(tmp_path):
    from ssd_keras.data import load_source, write_csv

    data = load_source(f"voc:{SAMPLE_VOC}", split="train")
    data.records = data.records[:3]
    csv = tmp_path / "d.csv"
    write_csv(data, csv)
    csv.write_text(csv.read_text().replace("JPEGImages", "nowhere"))
    with pytest.raises(ValueError, match=r"no images to train on; all 3 were skipped \(e.g. .*image file missing\)"):
        load_train_val(f"csv:{csv}", reader_kwargs={"on_error": "skip"})
