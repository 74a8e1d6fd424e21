"""The lesson's own annotation formats: COCO-style json (`pascal_train2007.json`) and CSV.

COCO json (`coco:PATH.json`): `images` (`id`, `file_name`, `width`, `height`),
`annotations` (`image_id`, `bbox = [x, y, w, h]` 0-based pixels, `category_id`, `ignore`),
`categories` (`id`, `name`). `bbox` -> relative yxyx `(y/H, x/W, (y+h)/H, (x+w)/W)`, the same
numbers as the VOC reader gives for the same object (VOC `xmin = x + 1`, `xmax = x + w`).
`ignore = 1` (the course's difficult flag, which the lesson filters on) -> `difficult`.
Read with plain `json` rather than pycocotools: the course's files have no `info`/`licenses`
keys and an `ignore` field pycocotools does not know; nothing here needs its index.

CSV (`csv:PATH`): the lecture's `fn,bbox` files plus a class column::

    fn,bbox,clas
    000012.jpg,96 155 269 350,car
    000017.jpg,61 184 198 278 89 8 187 207,person horse

`bbox` holds 4 numbers per object, the course's `hw_bb` convention: 0-based inclusive pixel
`(top, left, bottom, right)`, so relative = `(top/H, left/W, (bottom+1)/H, (right+1)/W)`.
The class column (`clas`, `class`, `classes`, `cat` or `label`) holds one name per box,
space-separated. Rows naming the same file are one image (one row per object reads as one row
per image). Image sizes come from the image headers.
"""

from __future__ import annotations

import csv
import json
import logging
import os

import numpy as np

from ssd_keras.data.records import (VOC_CLASSES, DetectionData, ErrorPolicy, Record, check_image_file,
                                    class_names_for)
from ssd_keras.data.voc import check_pixel_boxes

log = logging.getLogger("ssd_keras.data")

_CLASS_COLUMNS = ("clas", "class", "classes", "cat", "label", "labels")


def read_coco_json(json_path, images_dir=None, keep_difficult=True, use_ignore=True,
                   on_error="raise", check_images=True) -> DetectionData:
    """Read COCO-style json (the course's `pascal_*2007.json`) into relative-yxyx records.

    Args:
        json_path: the json file.
        images_dir: folder of the images; default: `<json dir>/VOCdevkit/VOC2007/JPEGImages`
            if it exists (the course's `PATH` layout), else `<json dir>/JPEGImages`, else the
            json's folder.
        keep_difficult: keep objects flagged `ignore` (as `difficult=True`).
        use_ignore: read `ignore` as the difficult flag (the course's meaning).
        on_error, check_images: as for `read_voc`.
    Class names are the categories sorted by id; a file with exactly the VOC names gets
    `VOC_CLASSES` order.
    """
    json_path = os.fspath(json_path)
    try:
        with open(json_path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{json_path}: cannot read COCO json ({e})") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(data, dict) or key not in data:
            raise ValueError(f"{json_path}: not COCO-style json, no {key!r} key")
        if not isinstance(data[key], list) or not all(isinstance(x, dict) for x in data[key]):
            raise ValueError(f"{json_path}: {key!r} must be a list of objects, got {type(data[key]).__name__}")
    if images_dir is None:
        base = os.path.dirname(json_path)
        images_dir = next((d for d in (os.path.join(base, "VOCdevkit", "VOC2007", "JPEGImages"),
                                       os.path.join(base, "JPEGImages")) if os.path.isdir(d)), base)
    try:
        cats = sorted(data["categories"], key=lambda c: c["id"])
        names = [str(c["name"]) for c in cats]
    except (KeyError, TypeError) as e:
        raise ValueError(f"{json_path}: every category needs an 'id' and a 'name' ({type(e).__name__}: {e})") from None
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{json_path}: categories {[c['id'] for c in cats if str(c['name']) == repeated[0]]} "
                         f"share the name {repeated[0]!r}; class names must be unique")
    class_names = VOC_CLASSES if sorted(names) == sorted(VOC_CLASSES) else tuple(names)
    cat_to_id = {c["id"]: class_names.index(name) for c, name in zip(cats, names)}

    policy = ErrorPolicy(on_error)
    image_ids = {img.get("id") for img in data["images"]}
    per_image, orphans = {}, []
    for a in data["annotations"]:
        (per_image.setdefault(a.get("image_id"), []) if a.get("image_id") in image_ids else orphans).append(a)
    if orphans:
        message = (f"{len(orphans)} annotation(s) refer to an image_id that no image has (e.g. "
                   f"{orphans[0].get('image_id')!r}; image ids look like {next(iter(image_ids), None)!r})")
        if len(orphans) == len(data["annotations"]):  # e.g. ids as strings on one side, numbers on the other
            raise ValueError(f"{json_path}: {message}; no image would have an object")
        log.warning("%s: %s; ignored (a subset of the images?)", json_path, message)
    records = []
    for i, img in enumerate(data["images"]):
        try:
            fname, w, h = str(img["file_name"]), int(img["width"]), int(img["height"])
            if w <= 0 or h <= 0:
                raise ValueError("not positive")
        except (KeyError, TypeError, ValueError):
            policy.problem(f"{json_path} (images[{i}])", "an image needs file_name, and width and height "
                                                         f"as positive integers; got {img!r}"[:300])
            continue
        anns = per_image.get(img.get("id"), [])
        where = f"{json_path} (image {fname})"
        unknown = [a.get("category_id") for a in anns if a.get("category_id") not in cat_to_id]
        if unknown:
            policy.problem(where, f"unknown category_id {unknown[0]}")
            continue
        xywh = [_xywh(a.get("bbox")) for a in anns]
        if None in xywh:
            policy.problem(where, "bbox must be 4 numbers [x, y, width, height], got "
                                  f"{anns[xywh.index(None)].get('bbox')!r}")
            continue
        xywh = np.array(xywh, np.float64).reshape(-1, 4)
        # Check in VOC terms so that both readers accept and reject the same boxes.
        problem = check_pixel_boxes(np.stack([xywh[:, 0] + 1, xywh[:, 1] + 1, xywh[:, 0] + xywh[:, 2],
                                              xywh[:, 1] + xywh[:, 3]], 1), w, h)
        if problem:
            policy.problem(where, problem)
            continue
        path = os.path.join(images_dir, fname)
        if check_images:
            problem = check_image_file(path, (w, h))
            if problem:
                policy.problem(path, problem)
                continue
        boxes = np.stack([xywh[:, 1] / h, xywh[:, 0] / w, (xywh[:, 1] + xywh[:, 3]) / h,
                          (xywh[:, 0] + xywh[:, 2]) / w], 1)
        difficult = np.array([bool(a.get("ignore", 0)) and use_ignore for a in anns], bool)
        keep = np.ones(len(anns), bool) if keep_difficult else ~difficult
        records.append(Record(
            image_id=os.path.splitext(fname)[0], path=path,
            boxes=np.clip(boxes, 0, 1).astype(np.float32)[keep],
            classes=np.array([cat_to_id[a["category_id"]] for a in anns], np.int32)[keep],
            difficult=difficult[keep], width=w, height=h))
        records[-1]._from_reader = True  # its file checked above (check_images): not again by make_dataset
    policy.finish(f"read_coco_json({json_path})")
    return DetectionData(records, tuple(class_names), name=f"coco:{json_path}", skipped=policy.skipped)


def _xywh(bbox):
    """A COCO bbox as 4 floats (numbers or numeric strings, as numpy read them before), or None."""
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or any(isinstance(v, bool) for v in bbox):
        return None
    try:
        return [float(v) for v in bbox]
    except (TypeError, ValueError):
        return None


def _is_id(label):
    """A CSV class label written as an integer id ("3", "-1") rather than a name."""
    return label.lstrip("-").isdigit()


def read_csv(csv_path, images_dir=None, class_names=None, on_error="raise") -> DetectionData:
    """Read the lecture's CSV (`fn,bbox` + class column; see the module doc for the format).

    Args:
        csv_path: the CSV file.
        images_dir: folder `fn` is relative to; default: the CSV's folder.
        class_names: names (id = position). Default (None or "auto"): `VOC_CLASSES` if every
            name in the file is a VOC class, else the sorted set of names in the file. Integer
            labels are ids into `class_names`, which must then be given.
        on_error: as for `read_voc`. Every image's header is read (for its size).
    """
    csv_path = os.fspath(csv_path)
    images_dir = os.path.dirname(csv_path) if images_dir is None else os.fspath(images_dir)
    # utf-8-sig: a spreadsheet's byte-order mark would otherwise glue itself to 'fn'.
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        header = reader.fieldnames or []
    if "fn" not in header or "bbox" not in header:
        raise ValueError(f"{csv_path}: expected columns 'fn' and 'bbox' (got {list(header)})")
    if not rows:
        raise ValueError(f"{csv_path}: no data rows under the header")
    cls_col = next((c for c in _CLASS_COLUMNS if c in header), None)
    if cls_col is None:
        raise ValueError(f"{csv_path}: no class column (one of {_CLASS_COLUMNS}); got {list(header)}")
    labels = [(r[cls_col] or "").split() for r in rows]
    if class_names is None or class_names == "auto":
        if any(_is_id(n) for ls in labels for n in ls):
            # An id means nothing without the names; guessing (VOC's?) would train on wrong ones.
            raise ValueError(f"{csv_path}: the class column holds integer ids; give the class names "
                             f"they index (class_names=[...], CLI: --classes name,name,...)")
        found = {n for ls in labels for n in ls}
        class_names = class_names_for(found)
    class_names = tuple(class_names)
    cls_id = {c: i for i, c in enumerate(class_names)}

    # One row per image (the lecture's form) or one per object: rows naming the same file are
    # one image, else it would train as several one-object images and leak into the held-out part.
    # Each row is checked alone (its numbers against its labels), then the image as a whole.
    policy = ErrorPolicy(on_error)
    images, bad = {}, set()  # fn -> (first line, boxes, class ids); fns with a bad row
    for line, (row, labs) in enumerate(zip(rows, labels), start=2):
        fn, where = row["fn"], f"{csv_path}:{line} ({row['fn']})"
        problem = None
        try:
            nums = np.array([float(v) for v in (row["bbox"] or "").split()], np.float64)
        except ValueError:
            problem = f"non-numeric bbox {row['bbox']!r}"
        else:
            if len(nums) % 4 or len(nums) // 4 != len(labs):
                problem = f"{len(nums)} bbox numbers for {len(labs)} class labels (need 4 per label)"
            elif unknown := [n for n in labs if not _is_id(n) and n not in cls_id]:
                problem = f"unknown class name {unknown[0]!r} (known: {', '.join(class_names)})"
            else:
                ids = [int(n) if _is_id(n) else cls_id[n] for n in labs]
                if any(not 0 <= i < len(class_names) for i in ids):
                    problem = f"class id out of range 0..{len(class_names) - 1}"
        if problem:
            policy.problem(where, problem)
            bad.add(fn)
            continue
        _, parts, image_ids = images.setdefault(fn, (line, [], []))
        parts.append(nums)
        image_ids.extend(ids)
    records = []
    for fn, (line, parts, ids) in images.items():
        if fn in bad:  # one bad row spoils the image: its other objects alone would be wrong
            continue
        where = f"{csv_path}:{line} ({fn})"
        nums = np.concatenate(parts)
        path = os.path.join(images_dir, fn)
        problem = check_image_file(path)  # always: the image header gives the size
        if problem:
            policy.problem(path, problem)
            continue
        from PIL import Image

        with Image.open(path) as im:
            w, h = im.size
        tlbr = nums.reshape(-1, 4)  # 0-based inclusive (top, left, bottom, right)
        problem = check_pixel_boxes(tlbr[:, [1, 0, 3, 2]], w, h, one_based=False)
        if problem:
            policy.problem(where, problem)
            continue
        boxes = (tlbr + np.array([0, 0, 1, 1])) / np.array([h, w, h, w])
        records.append(Record(image_id=os.path.splitext(os.path.basename(fn))[0], path=path,
                              boxes=np.clip(boxes, 0, 1), classes=ids, difficult=np.zeros(len(ids), bool),
                              width=w, height=h))
        records[-1]._from_reader = True  # its file checked above: not again by make_dataset
    policy.finish(f"read_csv({csv_path})")
    return DetectionData(records, class_names, name=f"csv:{csv_path}", skipped=policy.skipped)


def write_csv(data: DetectionData, csv_path, images_dir=None):
    """Write records as the lecture's CSV (`fn,bbox,clas`; 0-based inclusive pixel tlbr).

    Inverse of `read_csv` for boxes on pixel boundaries. `fn` is relative to `images_dir`
    (default: the CSV's folder).
    """
    csv_path = os.fspath(csv_path)
    images_dir = os.path.dirname(csv_path) if images_dir is None else images_dir
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["fn", "bbox", "clas"])
        for r in data.records:
            px = np.round(r.boxes * np.array([r.height, r.width] * 2)) - np.array([0, 0, 1, 1])
            w.writerow([os.path.relpath(r.path, images_dir), " ".join(str(int(v)) for v in px.reshape(-1)),
                        " ".join(data.class_names[c] for c in r.classes)])
