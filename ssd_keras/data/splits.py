"""Training and held-out data from one source, and the record that lets `evaluate` find the
same held-out images again.

A source either has a validation split of its own (a VOC folder with `ImageSets/Main/val.txt`,
`shapes`' `val` stream, tfds' `validation`), or it is one set of images (a COCO json, a CSV, a
VOC folder with only `train.txt`), of which a seeded fraction is held out. `load_train_val`
decides, `held_out` reproduces the decision from what it recorded (the plain dict `load_train_val`
returns, kept in the detector's `metadata["split"]`), and a split that a source cannot honour is an error.
"""

from __future__ import annotations

import os

from ssd_keras.data.sources import load_source
from ssd_keras.data.voc import find_voc_root

__all__ = ["load_train_val", "held_out", "source_kind", "has_split"]

#: Sources that are one set of images: no named splits.
SINGLE_SET = ("coco", "csv")


def source_kind(spec):
    """`"shapes"`, `"voc"`, `"tfds"`, `"coco"` or `"csv"` for a data-source spec."""
    kind = os.fspath(spec).split(":", 1)[0]
    if kind not in ("shapes", "voc", "tfds", "coco", "csv"):
        raise ValueError(f"unknown data source {spec!r}")
    return kind


def _voc_list_file(spec, split):
    """A VOC spec's devkit root and its `ImageSets/Main/<split>.txt` (which may not exist)."""
    root = find_voc_root(spec.split(":", 1)[1])
    return root, os.path.join(root, "ImageSets", "Main", f"{split}.txt")


def has_split(spec, split):
    """Whether `spec` has a split named `split` (without reading its images)."""
    kind = source_kind(spec)
    if kind in SINGLE_SET:
        return split in (None, "all")
    if kind == "shapes":
        return split in ("train", "val", "test")
    if kind == "tfds":
        return split in ("train", "val", "validation", "trainval", "test")
    if split in (None, "all"):
        return True
    root, list_file = _voc_list_file(spec, split)
    if not os.path.isfile(list_file):
        return False
    # A devkit copy may list a split whose images it does not hold (e.g. the train images only,
    # with the genuine val.txt): the split counts only if some of its annotations are there.
    with open(list_file, encoding="utf-8-sig") as f:  # a byte-order mark is not part of an id
        ids = [line.split()[0] for line, _ in zip(f, range(50)) if line.strip()]
    return any(os.path.isfile(os.path.join(root, "Annotations", f"{i}.xml")) for i in ids)


def _check_split(spec, split, flag):
    if not has_split(spec, split):
        kind = source_kind(spec)
        if kind in SINGLE_SET:
            raise ValueError(f"{flag}: a {kind} file is one set of images and has no split {split!r}; "
                             "use --val-fraction to hold out part of it")
        list_file = _voc_list_file(spec, split)[1] if kind == "voc" else None
        if list_file and os.path.isfile(list_file):
            raise ValueError(f"{flag}: {list_file} lists no image whose annotation is in Annotations/")
        raise ValueError(f"{flag}: {spec} has no split {split!r}")


def load_train_val(spec, train_split="train", val_split="auto", val_fraction=0.1, seed=0,
                   reader_kwargs=None, val_reader_kwargs=None):
    """Training and held-out `DetectionData` from one source, and how they were split.

    Args:
        spec: a data-source spec (`ssd_keras.data.load_source`).
        train_split: the split to train on (None/"all" for a one-set source).
        val_split: "auto" (the source's `val` split when it has one, else `val_fraction` of
            the training split), a split name, a fraction spec "fraction", or "none".
        val_fraction: the held-out part when one is cut from the training split.
        seed: the seed of that cut (deterministic).
        reader_kwargs: passed to the reader (`on_error`, shapes' `count`/settings, ...).
        val_reader_kwargs: for the validation split's reader (default `reader_kwargs`; e.g.
            a different shapes `count`).
    Returns:
        `(train, val, record)`: `val` None for "none"; `record` a JSON-able dict for
        `held_out` (and for the detector's metadata).
    """
    kind = source_kind(spec)
    if kind in SINGLE_SET and train_split in ("train", "all", None):
        train_split = None
    if val_split == "auto":
        val_split = "val" if kind not in SINGLE_SET and has_split(spec, "val") else "fraction"
    if not 0.0 < val_fraction < 1.0 and val_split == "fraction":
        raise ValueError(f"--val-fraction: must be in (0, 1), got {val_fraction}")
    _check_split(spec, train_split, "--train-split")
    record = {"data": spec, "train_split": train_split}
    reader_kwargs = dict(reader_kwargs or {})
    val_kwargs = dict(reader_kwargs if val_reader_kwargs is None else val_reader_kwargs)
    data = load_source(spec, split=train_split, **reader_kwargs)
    if not len(data):
        skipped = getattr(data, "skipped", None) or []
        raise ValueError(f"{spec}: no images to train on" + (
            f"; all {len(skipped)} were skipped (e.g. {skipped[0][0]}: {skipped[0][1]})" if skipped else ""))
    if val_split == "none":
        return data, None, dict(record, val={"kind": "none"})
    if val_split == "fraction":
        val, train = data.split(val_fraction, seed=seed)
        if not len(val):
            raise ValueError(f"--val-fraction {val_fraction} of {len(data)} image(s) holds out none; "
                             f"pass a larger --val-fraction, or --val-split none to train without one")
        train.skipped = val.skipped = data.skipped
        # "of": how many images the cut was made from, so that `held_out` can tell when a re-read
        # gives other images (files changed, or a reader that reads them differently).
        return train, val, dict(record, val={"kind": "fraction", "fraction": val_fraction, "seed": seed,
                                             "of": len(data)})
    _check_split(spec, val_split, "--val-split")
    if kind in ("voc", "csv"):  # the training split's names, not ones found again in val
        val_kwargs["class_names"] = data.class_names
    val = load_source(spec, split=val_split, **val_kwargs)
    if not len(val):
        raise ValueError(f"--val-split: {spec}'s split {val_split!r} has no images; name another, "
                         f"or pass --val-split none")
    return data, val, dict(record, val={"kind": "split", "split": val_split, "count": len(val)})


def held_out(spec, record, **reader_kwargs):
    """The held-out `DetectionData` that `load_train_val` chose, from its `record`.

    Raises ValueError when `record` is missing, is for another source, or held nothing out.
    """
    if not record or record.get("data") != spec or record.get("val", {}).get("kind") in (None, "none"):
        trained_on = (record or {}).get("data")
        why = (f" (it was trained on {trained_on!r})" if trained_on and trained_on != spec
               else " (it was trained on all of it: --val-split none)" if trained_on else "")
        splits = "--split all" if source_kind(spec) in SINGLE_SET else "e.g. --split val, test or all"
        raise ValueError(f"--split held-out: the model records no held-out part of {spec!r}{why}; "
                         f"name a split instead ({splits})")
    val = record["val"]
    if val["kind"] == "fraction":
        data = load_source(spec, split=record.get("train_split"), **reader_kwargs)
        if val.get("of") is not None and val["of"] != len(data):
            # The seeded cut of another list of images would hold out training images.
            raise ValueError(f"--split held-out: {spec!r} now reads as {len(data)} images, but the held-out "
                             f"part was cut from {val['of']}; it cannot be found again (use --split all)")
        return data.split(val["fraction"], seed=val["seed"])[0]
    if source_kind(spec) == "shapes" and val.get("count"):
        reader_kwargs.setdefault("count", val["count"])
    return load_source(spec, split=val["split"], **reader_kwargs)
