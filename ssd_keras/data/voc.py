"""Pascal VOC devkit reader (`voc:/path/to/VOCdevkit/VOC2007`).

Layout: `Annotations/<id>.xml`, `JPEGImages/<id>.jpg`, `ImageSets/Main/<split>.txt`.

**Box convention.** VOC pixel boxes are 1-based and inclusive: an object covering pixel
columns 1..W has `xmin = 1, xmax = W`. Pixel `i` (1-based) covers the continuous interval
`[i - 1, i]`, so the relative yxyx box is

    ymin = (ymin_px - 1) / H,  xmin = (xmin_px - 1) / W,  ymax = ymax_px / H,  xmax = xmax_px / W

e.g. 000012.jpg (500x333, car at VOC (156, 97, 351, 270)) -> (96/333, 155/500, 270/333, 351/500).
This is exactly COCO-json `[x, y, w, h]` -> `(y/H, x/W, (y+h)/H, (x+w)/W)` for the course's
`pascal_train2007.json` (VOC `xmin = x + 1`, `xmax = x + w`), so both readers agree bit for bit.

XML is parsed with `defusedxml` (no entity expansion / external entities).
"""

from __future__ import annotations

import os
from xml.etree.ElementTree import ParseError

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException
import numpy as np

from ssd_keras.data.records import (VOC_CLASSES, DetectionData, ErrorPolicy, Record, check_image_file,
                                    class_names_for, log)


def voc_to_relative(boxes_px, width, height):
    """VOC 1-based inclusive pixel boxes `(xmin, ymin, xmax, ymax)` `[n, 4]` -> relative yxyx."""
    b = np.asarray(boxes_px, np.float64).reshape(-1, 4)
    rel = np.stack([(b[:, 1] - 1) / height, (b[:, 0] - 1) / width, b[:, 3] / height, b[:, 2] / width], 1)
    return rel.astype(np.float32)


def relative_to_voc(boxes, width, height):
    """Relative yxyx `[n, 4]` -> VOC 1-based inclusive pixel `(xmin, ymin, xmax, ymax)` (rounded)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.stack([np.round(b[:, 1] * width) + 1, np.round(b[:, 0] * height) + 1,
                     np.round(b[:, 3] * width), np.round(b[:, 2] * height)], 1).astype(np.int64)


def find_voc_root(root) -> str:
    """Accept `.../VOC2007`, `.../VOCdevkit` or the folder holding `VOCdevkit`."""
    root = os.fspath(root)
    for cand in (root, os.path.join(root, "VOC2007"), os.path.join(root, "VOCdevkit", "VOC2007")):
        if os.path.isdir(os.path.join(cand, "Annotations")):
            return cand
    raise FileNotFoundError(
        f"{root}: not a VOC devkit folder (expected Annotations/, JPEGImages/, ImageSets/Main/ in it, "
        "e.g. voc:/path/to/VOCdevkit/VOC2007)")


def _text(node, tag, default=None):
    child = node.find(tag)
    if child is None or child.text is None:
        if default is not None:
            return default
        raise ValueError(f"<{tag}> missing")
    return child.text.strip()


def parse_voc_xml(path):
    """Parse one VOC annotation file.

    Returns a dict: `filename`, `width`, `height`, `names` (list), `boxes_px` `[n, 4]` VOC
    1-based `(xmin, ymin, xmax, ymax)`, `difficult`, `truncated`. Raises ValueError naming the
    file on malformed XML, forbidden entities/DTDs, missing fields or non-numeric values.
    """
    try:
        tree = SafeET.parse(path)
    except DefusedXmlException as e:
        raise ValueError(f"{path}: unsafe XML refused ({e.__class__.__name__})") from None
    except ParseError as e:
        raise ValueError(f"{path}: malformed XML ({e})") from None
    ann = tree.getroot()
    try:
        size = ann.find("size")
        if size is None:
            raise ValueError("<size> missing")
        width, height = int(float(_text(size, "width"))), int(float(_text(size, "height")))
        if width <= 0 or height <= 0:
            raise ValueError(f"image size {width}x{height}")
        names, boxes, difficult, truncated = [], [], [], []
        for obj in ann.findall("object"):
            names.append(_text(obj, "name"))
            bb = obj.find("bndbox")
            if bb is None:
                raise ValueError(f"object {names[-1]!r} has no <bndbox>")
            boxes.append([float(_text(bb, t)) for t in ("xmin", "ymin", "xmax", "ymax")])
            difficult.append(int(float(_text(obj, "difficult", "0"))) != 0)
            truncated.append(int(float(_text(obj, "truncated", "0"))) != 0)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    filename = (ann.findtext("filename") or "").strip() or os.path.splitext(os.path.basename(path))[0] + ".jpg"
    return dict(filename=filename, width=width, height=height, names=names,
                boxes_px=np.asarray(boxes, np.float64).reshape(-1, 4),
                difficult=np.asarray(difficult, bool), truncated=np.asarray(truncated, bool))


def check_pixel_boxes(boxes_px, width, height, one_based=True):
    """Problem text for VOC-style `(xmin, ymin, xmax, ymax)` pixel boxes, or None.

    An overshoot of up to one pixel (common in hand-made annotations) is clipped, not reported.
    """
    b = np.asarray(boxes_px, np.float64).reshape(-1, 4)
    lo = 1.0 if one_based else 0.0
    if not np.all(np.isfinite(b)):
        return "non-finite box coordinates"
    bad = np.where((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1]))[0]
    if len(bad):
        return f"box {b[bad[0]].tolist()} has xmax < xmin or ymax < ymin"
    hi = np.array([width, height, width, height], np.float64) + (0 if one_based else -1)
    out = np.where((b < lo - 1).any(1) | (b > hi + 1).any(1))[0]
    if len(out):
        return f"box {b[out[0]].tolist()} lies outside the {width}x{height} image"
    # Pixel edges as the readers compute them (a box of one pixel spans [x - lo, x - lo + 1)),
    # clipped to the image as they clip: a box left with no area would reach the loss empty.
    size = np.array([width, height, width, height], np.float64)
    edges = np.clip(b - np.array([lo, lo, lo - 1, lo - 1]), 0, size)
    empty = np.where((edges[:, 2] <= edges[:, 0]) | (edges[:, 3] <= edges[:, 1]))[0]
    if len(empty):
        return f"box {b[empty[0]].tolist()} is empty once clipped to the {width}x{height} image"
    return None


def read_voc(root, split="trainval", keep_difficult=True, class_names=VOC_CLASSES,
             on_error="raise", check_images=True) -> DetectionData:
    """Read a VOC devkit folder into a `DetectionData` (boxes relative yxyx, see module doc).

    Args:
        root: `VOCdevkit/VOC2007` (or `VOCdevkit`, or the folder holding it).
        split: name of a list in `ImageSets/Main` (`train`, `val`, `trainval`, `test`), or None
            for every XML file in `Annotations/`.
        keep_difficult: keep `difficult` objects (flagged in `Record.difficult`; keep them
            for evaluation, where they neither count nor penalise).
        class_names: class names (id = position); a name outside them is bad input (a typo
            such as "persn" must not become a class). Default: the 20 `VOC_CLASSES`. `"auto"`:
            for a folder of one's own classes in VOC layout, the 20 VOC names if every name in
            the split's annotations is one of them, else the sorted set of names found. To
            evaluate a model, give the names it was trained with.
        on_error: `"raise"` (ValueError naming the file) or `"skip"` (count, log, skip image).
        check_images: check each image file (exists, non-empty, a format TensorFlow decodes,
            size equal to the XML's, decodes whole: `records.check_image_file`) so that bad files
            never reach the pipeline.
    """
    if isinstance(class_names, str) and class_names != "auto":
        raise ValueError(f"read_voc: class_names must be a list of names or 'auto', got {class_names!r}")
    voc = find_voc_root(root)
    policy = ErrorPolicy(on_error)
    ann_dir = os.path.join(voc, "Annotations")
    if split is None:
        ids = sorted(os.path.splitext(f)[0] for f in os.listdir(ann_dir) if f.endswith(".xml"))
    else:
        list_file = os.path.join(voc, "ImageSets", "Main", f"{split}.txt")
        if not os.path.exists(list_file):
            main = os.path.join(voc, "ImageSets", "Main")
            have = sorted(f[:-4] for f in os.listdir(main) if f.endswith(".txt") and "_" not in f) if os.path.isdir(main) else []
            raise FileNotFoundError(f"{list_file}: no such image set; available: {have} (or split=None for all XML)")
        with open(list_file, encoding="utf-8-sig") as f:  # a byte-order mark is not part of an id
            ids = [line.split()[0] for line in f if line.strip()]
    parsed = []  # parse everything first: "auto" class names depend on all of them
    for image_id in ids:
        xml = os.path.join(ann_dir, f"{image_id}.xml")
        if not os.path.exists(xml):
            policy.problem(xml, "annotation file missing")
            continue
        try:
            parsed.append((image_id, xml, parse_voc_xml(xml)))
        except ValueError as e:
            policy.problem(xml, str(e).removeprefix(f"{xml}: "))
    if isinstance(class_names, str):  # "auto" (checked above)
        class_names = class_names_for(n for _, _, a in parsed for n in a["names"])
        if class_names != VOC_CLASSES:
            log.info("read_voc: %d class names from the annotations: %s", len(class_names),
                     ", ".join(class_names))
    cls_id = {c: i for i, c in enumerate(class_names)}
    records = []
    for image_id, xml, a in parsed:
        unknown = [n for n in a["names"] if n not in cls_id]
        if unknown:
            policy.problem(xml, f"unknown class name {unknown[0]!r} (known: {', '.join(class_names)}; "
                                f"for a data set of other classes pass class_names='auto' / --classes auto)")
            continue
        problem = check_pixel_boxes(a["boxes_px"], a["width"], a["height"])
        if problem:
            policy.problem(xml, problem)
            continue
        path = os.path.join(voc, "JPEGImages", a["filename"])
        if check_images:
            problem = check_image_file(path, (a["width"], a["height"]))
            if problem:
                policy.problem(path, f"{problem} (annotation {xml})")
                continue
        keep = np.ones(len(a["names"]), bool) if keep_difficult else ~a["difficult"]
        boxes = np.clip(voc_to_relative(a["boxes_px"], a["width"], a["height"]), 0.0, 1.0)
        records.append(Record(
            image_id=image_id, path=path, boxes=boxes[keep],
            classes=np.array([cls_id[n] for n in a["names"]], np.int32)[keep],
            difficult=a["difficult"][keep], truncated=a["truncated"][keep],
            width=a["width"], height=a["height"]))
        records[-1]._from_reader = True  # its file checked above (check_images): not again by make_dataset
    policy.finish(f"read_voc({voc}, split={split!r})")
    empty = sum(r.num_objects == 0 for r in records)
    if empty:
        log.info("read_voc: %d image(s) without objects kept (all-padding targets)", empty)
    return DetectionData(records, tuple(class_names), name=f"voc:{voc}:{split}", skipped=policy.skipped)
