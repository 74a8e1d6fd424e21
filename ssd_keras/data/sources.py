"""Data sources by name, the same everywhere (CLI, notebooks, tests):

    shapes, shapes:N                the embedded synthetic default (`ShapesData`: the records of
                                    `make_shapes`, generated on demand, O(batch) memory)
    voc:/path/to/VOCdevkit/VOC2007  a VOC devkit folder (`read_voc`)
    coco:/path/to/pascal_train2007.json   the course's COCO-style json (`read_coco_json`)
    csv:/path/to/file.csv           the lecture's CSV (`read_csv`)
    tfds:voc/2007, tfds:voc/2012    tensorflow-datasets (`read_tfds`; needs a prepared
                                    data_dir or `download=True` and a network)

A bare path also works: a folder is read as VOC, `*.json` as COCO, `*.csv` as CSV.
"""

from __future__ import annotations

import io
import os

import numpy as np

from ssd_keras.data.formats import read_coco_json, read_csv
from ssd_keras.data.records import VOC_CLASSES, DetectionData, Record
from ssd_keras.data.shapes import ShapesData
from ssd_keras.data.voc import read_voc

#: The real-photo sample shipped with the repository (VOC2007 train subset).
SAMPLE_VOC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                          "data", "voc2007_sample", "VOC2007")


class SourceUnavailable(RuntimeError):
    """A data source that cannot be loaded here (e.g. tfds offline); the message says what to use."""


_TFDS_SPLITS = {"train": "train", "val": "validation", "validation": "validation",
                "trainval": "train+validation", "test": "test"}


def _offline_message(name, data_dir, why):
    return (f"tfds:{name} is not available: {why}. tensorflow-datasets needs the prepared data set in "
            f"data_dir={data_dir or '~/tensorflow_datasets'} or network access to download it "
            f"(pass download=True). Offline, use a local devkit copy instead: "
            f"voc:/path/to/VOCdevkit/VOC2007 (the repository ships a sample: voc:{SAMPLE_VOC}).")


def read_tfds(name="voc/2007", split="train", data_dir=None, download=False, keep_difficult=True) -> DetectionData:
    """Read a tensorflow-datasets VOC build into records (encoded JPEG bytes kept in memory).

    tfds boxes are relative yxyx already, but tfds' VOC builder divides the 1-based VOC
    `xmin`/`ymin` by the size without the `- 1`; we subtract one pixel so that every source
    gives the same numbers as `read_voc` (see `ssd_keras.data.voc`).

    Raises `SourceUnavailable` (naming the local `voc:` alternative) when the data set is
    neither prepared in `data_dir` nor downloadable (`download=False`, or no network).
    """
    import tensorflow_datasets as tfds
    from PIL import Image

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # unknown name, bad data_dir, ...
        raise SourceUnavailable(_offline_message(name, data_dir, f"{type(e).__name__}: {e}")) from None
    if not builder.is_prepared():
        if not download:
            raise SourceUnavailable(_offline_message(name, data_dir, "not prepared in data_dir and download=False"))
        try:
            builder.download_and_prepare()
        except Exception as e:  # noqa: BLE001 - any download failure means: use the local copy
            raise SourceUnavailable(_offline_message(name, data_dir, f"download failed ({type(e).__name__}: {e})")) from None
    ds = builder.as_dataset(split=_TFDS_SPLITS.get(split, split), decoders={"image": tfds.decode.SkipDecoding()})
    names = tuple(builder.info.features["objects"]["label"].names)
    records = []
    for ex in tfds.as_numpy(ds):
        data = bytes(ex["image"])
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
        obj = ex["objects"]
        boxes = np.asarray(obj["bbox"], np.float32).reshape(-1, 4)
        boxes[:, :2] = np.maximum(boxes[:, :2] - np.array([1.0 / h, 1.0 / w], np.float32), 0.0)
        difficult = np.asarray(obj["is_difficult"], bool)
        keep = np.ones(len(boxes), bool) if keep_difficult else ~difficult
        fname = ex.get("image/filename", b"")
        fname = fname.decode() if isinstance(fname, bytes) else str(fname)
        records.append(Record(image_id=os.path.splitext(fname)[0], path=None, image=data, boxes=boxes[keep],
                              classes=np.asarray(obj["label"], np.int32)[keep], difficult=difficult[keep],
                              truncated=np.asarray(obj["is_truncated"], bool)[keep], width=w, height=h))
    return DetectionData(records, names if names else VOC_CLASSES, name=f"tfds:{name}:{split}")


def load_source(spec, split=None, **kwargs) -> DetectionData:
    """Load a data source by name (see the module doc) -> `DetectionData`.

    `shapes` gives a `ShapesData` (a `DetectionData` whose images are made when read and, in
    `make_dataset`, inside the `tf.data` pipeline); the other sources read their annotations now.

    Args:
        spec: `"shapes"`, `"voc:PATH"`, `"coco:PATH.json"`, `"csv:PATH"`, `"tfds:voc/2007"`,
            or a bare path.
        split: shapes: `train`/`val`/`test` (default `train`); voc: an `ImageSets/Main` list
            (default `trainval`); tfds: `train`/`val`/`trainval`/`test` (default `train`);
            not used by coco/csv (a split there raises).
        **kwargs: passed to the reader (e.g. `count`, `image_size`, `seed` for shapes;
            `keep_difficult`, `on_error` for voc/coco; `images_dir` for coco/csv;
            `data_dir`, `download` for tfds).
    """
    spec = os.fspath(spec)
    kind, _, arg = spec.partition(":")
    if kind not in ("shapes", "voc", "coco", "csv", "tfds") or (kind != "shapes" and not arg):
        if os.path.isdir(spec):
            kind, arg = "voc", spec
        elif spec.endswith(".json"):
            kind, arg = "coco", spec
        elif spec.endswith(".csv"):
            kind, arg = "csv", spec
        else:
            raise ValueError(f"unknown data source {spec!r}; use shapes, voc:/path/to/VOCdevkit/VOC2007, "
                             "coco:/path/to/annotations.json, csv:/path/to/file.csv or tfds:voc/2007")
    if kind == "shapes":
        if arg:
            if not arg.isdigit():
                raise ValueError(f"{spec!r}: shapes:N takes a number of images, e.g. shapes:24000")
            kwargs.setdefault("count", int(arg))
        return ShapesData(split=split or "train", **kwargs)
    if kind == "voc":
        return read_voc(arg, split="trainval" if split is None else split, **kwargs)
    if kind == "tfds":
        return read_tfds(arg, split=split or "train", **kwargs)
    if split not in (None, "all"):
        raise ValueError(f"{spec}: a {kind} file is one split; got split={split!r} (use DetectionData.split)")
    return read_coco_json(arg, **kwargs) if kind == "coco" else read_csv(arg, **kwargs)
