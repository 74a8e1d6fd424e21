"""docs/own_data.md ("Train on your own data"): every ```bash block of the page runs, exactly as
written, on a small generated data set laid out as the page describes, and writes the files
the page says it writes.

The page's CSV example (its ```csv block, verbatim) is the first three lines of the test's
CSV; generated lines follow so that there is something to train on. The VOC folder is the
page's layout with the page's example object in `0001.xml`. The commands run in-process
(`ssd_keras.cli.main`, after `shlex.split`) with the data set's folder as the working directory.
"""

import contextlib
import io
import json
import re
import shlex
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssd_keras.cli import main

DOC = Path(__file__).resolve().parent.parent / "docs" / "own_data.md"
W, H = 160, 120  # every generated image; the page's example boxes fit in it
# Sizes: 24 training images in each set, batch 8, so that Keras traces one training step, not
# a second one for a partial last batch (tracing is most of these runs' time).
CLASSES = ("mug", "spoon")  # the page's CSV example and its VOC example (--classes auto)
COLOURS = {"mug": (230, 60, 40), "spoon": (40, 90, 230)}


def fenced_blocks(text, lang):
    """The contents of the ```lang blocks of a markdown text, in order."""
    return [m.group(1) for m in re.finditer(rf"^```{lang}\n(.*?)^```$", text, re.DOTALL | re.MULTILINE)]


def doc_commands():
    """Each line of each ```bash block, split as the shell would (no shell syntax is used)."""
    lines = [line for block in fenced_blocks(DOC.read_text(), "bash") for line in block.splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    commands = [shlex.split(line) for line in lines]
    for c in commands:
        assert c[:3] == ["python", "-m", "ssd_keras"], f"not a ssd_keras command: {shlex.join(c)}"
        assert not set("|;&><$`") & set(shlex.join(c[3:])), f"shell syntax: {shlex.join(c)}"
    return commands


def _draw(path, objects):
    """A JPEG of W x H noise with each `(top, left, bottom, right, name)` filled in its colour."""
    rng = np.random.default_rng(zlib.crc32(path.name.encode()))
    pixels = rng.integers(90, 160, (H, W, 3), dtype=np.uint8)
    for top, left, bottom, right, name in objects:
        pixels[top:bottom + 1, left:right + 1] = COLOURS[name]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=90)


def _random_objects(rng, classes=CLASSES):
    objects = []
    for _ in range(rng.integers(1, 3)):
        h, w = rng.integers(30, 70), rng.integers(30, 90)
        top, left = rng.integers(0, H - h), rng.integers(0, W - w)
        objects.append((int(top), int(left), int(top + h - 1), int(left + w - 1), str(rng.choice(classes))))
    return objects


def _parse_csv_line(line):
    fn, bbox, clas = line.split(",")
    nums = [int(v) for v in bbox.split()]
    return fn, [(*nums[i:i + 4], name) for i, name in zip(range(0, len(nums), 4), clas.split())]


def make_csv_data(root, extra=25, seed=0):
    """`my_data/labels.csv`: the page's three lines, then `extra` generated images."""
    example = fenced_blocks(DOC.read_text(), "csv")
    assert len(example) == 1
    lines = example[0].strip().splitlines()
    assert len(lines) == 3 and lines[0] == "fn,bbox,clas"
    rows = [_parse_csv_line(line) for line in lines[1:]]
    rng = np.random.default_rng(seed)
    for i in range(extra):
        rows.append((f"images/{i + 3:04d}.jpg", _random_objects(rng)))
    data = root / "my_data"
    for fn, objects in rows:
        _draw(data / fn, objects)
    generated = [f"{fn},{' '.join(str(v) for o in objs for v in o[:4])},{' '.join(o[4] for o in objs)}"
                 for fn, objs in rows[2:]]
    (data / "labels.csv").write_text("\n".join(lines + generated) + "\n")
    return rows


def make_voc_data(root, images=32, val=8, seed=1):
    """`my_voc/`: Annotations, JPEGImages, ImageSets/Main/{train,val}.txt; 0001 is the page's
    example object (VOC `xmin ymin xmax ymax` = CSV `20 35 79 110` + 1)."""
    voc = root / "my_voc"
    (voc / "Annotations").mkdir(parents=True)
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    ids = [f"{i + 1:04d}" for i in range(images)]
    for image_id in ids:
        objects = [(20, 35, 79, 110, "mug")] if image_id == "0001" else _random_objects(rng, CLASSES)
        _draw(voc / "JPEGImages" / f"{image_id}.jpg", objects)
        xml = "".join(
            f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{left + 1}</xmin>"
            f"<ymin>{top + 1}</ymin><xmax>{right + 1}</xmax><ymax>{bottom + 1}</ymax></bndbox></object>"
            for top, left, bottom, right, n in objects)
        (voc / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><filename>{image_id}.jpg</filename><size><width>{W}</width>"
            f"<height>{H}</height><depth>3</depth></size>{xml}</annotation>")
    (voc / "ImageSets" / "Main" / "train.txt").write_text("\n".join(ids[val:]) + "\n")
    (voc / "ImageSets" / "Main" / "val.txt").write_text("\n".join(ids[:val]) + "\n")


def run_cli(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


def test_the_pages_csv_example_reads_as_the_page_says(tmp_path):
    from ssd_keras.data import load_source

    make_csv_data(tmp_path, extra=0)
    data = load_source(f"csv:{tmp_path / 'my_data' / 'labels.csv'}")
    assert data.class_names == CLASSES
    first, second = data.records
    # "20 35 79 110" covers rows 20..79 and columns 35..110: (top/H, left/W, (bottom+1)/H, (right+1)/W).
    np.testing.assert_allclose(first.boxes, [[20 / H, 35 / W, 80 / H, 111 / W]], rtol=1e-6)
    assert [data.class_names[c] for c in first.classes] == ["mug"]
    assert [data.class_names[c] for c in second.classes] == ["spoon", "mug"]
    np.testing.assert_allclose(second.boxes, [[10 / H, 5 / W, 60 / H, 45 / W],
                                              [30 / H, 60 / W, 90 / H, 140 / W]], rtol=1e-6)
    assert (first.width, first.height) == (W, H)


def test_the_pages_voc_example_is_the_same_box(tmp_path):
    from ssd_keras.data import load_source

    make_voc_data(tmp_path, images=10, val=2)
    # "auto": the sorted names found in the split's annotations (train.txt has both classes).
    assert load_source(f"voc:{tmp_path / 'my_voc'}", split="train", class_names="auto").class_names == CLASSES
    data = load_source(f"voc:{tmp_path / 'my_voc'}", split="val", class_names=CLASSES)
    record = next(r for r in data.records if r.image_id == "0001")
    np.testing.assert_allclose(record.boxes, [[20 / H, 35 / W, 80 / H, 111 / W]], rtol=1e-6)
    assert [data.class_names[c] for c in record.classes] == ["mug"]
    # Without --classes a VOC folder means the 20 VOC names: "mug" is an error naming the file.
    with pytest.raises(ValueError, match=r"0001\.xml.*unknown class name 'mug'.*--classes auto"):
        load_source(f"voc:{tmp_path / 'my_voc'}", split="val")


@pytest.mark.slow
def test_every_command_on_the_page_runs_and_writes_what_the_page_says(tmp_path, monkeypatch):
    commands = doc_commands()
    assert [c[3] for c in commands] == ["train", "train", "evaluate", "predict", "export"]
    make_csv_data(tmp_path)
    make_voc_data(tmp_path)
    monkeypatch.chdir(tmp_path)
    outputs = {}
    for command in commands:
        status, stdout, stderr = run_cli(command[3:])
        assert status == 0, f"{shlex.join(command)}\n{stdout[-2000:]}\n{stderr[-3000:]}"
        outputs[shlex.join(command[3:])] = stdout

    for run in ("runs/csv", "runs/voc"):
        run = tmp_path / run
        for name in ("model.keras", "best.keras", "last.keras", "metrics.json", "stage1/log.csv",
                     "stage1/done.weights.h5"):
            assert (run / name).is_file(), run / name
        assert any((run / "stage1" / "logs").rglob("*tfevents*"))
        header = (run / "stage1" / "log.csv").read_text().splitlines()[0].split(",")
        assert {"loss", "loc", "clas", "val_loss", "val_loc", "val_clas", "val_map"} <= set(header)
        ap = json.loads((run / "metrics.json").read_text())["ap"]
        assert list(ap) == list(CLASSES)

    train_csv = next(v for k, v in outputs.items() if k.startswith("train --data csv:"))
    assert "from scratch, all layers trainable: 1 epoch(s)" in train_csv
    assert "held out: 3 images" in train_csv  # 10 % of the 27 images
    train_voc = next(v for k, v in outputs.items() if k.startswith("train --data voc:"))
    assert "held out: 8 images" in train_voc  # val.txt

    evaluation = json.loads((tmp_path / "runs/csv/eval.json").read_text())
    assert evaluation["split"] == "held-out" and evaluation["images"] == 3
    assert "mAP: " in next(v for k, v in outputs.items() if k.startswith("evaluate"))

    predictions = json.loads((tmp_path / "out/predict/detections.json").read_text())
    assert [Path(p["image"]).name for p in predictions["images"]] == ["0001.jpg", "0002.jpg"]
    for result, name in zip(predictions["images"], ("0001.png", "0002.png")):
        # The picture's path, not the repr of a matplotlib Figure (a bug fixed with this page).
        assert result["picture"] == f"out/predict/{name}"
        assert (tmp_path / "out/predict" / name).read_bytes()[:4] == b"\x89PNG"
    predict_out = next(v for k, v in outputs.items() if k.startswith("predict"))
    assert "my_data/images/0001.jpg: " in predict_out and "-> out/predict/0001.png" in predict_out

    assert (tmp_path / "out/savedmodel/saved_model.pb").is_file()
