"""Build data/voc2007_sample/ from the full VOC2007 train copy in ../shared/data/voc2007.

Deterministic: 000012 (the reader's reference image) plus 199 ids drawn with
numpy.random.default_rng(2007) from the sorted VOC2007 `train.txt` ids that have an image;
files copied byte for byte; every ImageSets/Main list filtered to the sample (lists left empty,
i.e. val/test, are not written); pascal_train2007.json and pascal_train2007_with_ignore.json filtered to the sample's images.

    .venv/bin/python scripts/make_voc_sample.py [SRC] [DST]
"""

import json
import os
import shutil
import sys

import numpy as np

N_IMAGES = 200
SEED = 2007


def main(src="../shared/data/voc2007", dst="data/voc2007_sample"):
    voc = os.path.join(src, "VOCdevkit", "VOC2007")
    with open(os.path.join(voc, "ImageSets", "Main", "train.txt")) as f:
        ids = sorted(line.strip() for line in f if line.strip())
    ids = [i for i in ids if os.path.exists(os.path.join(voc, "JPEGImages", i + ".jpg"))]
    rest = [i for i in ids if i != "000012"]
    pick = sorted(["000012"] + list(np.random.default_rng(SEED).choice(rest, N_IMAGES - 1, replace=False)))
    keep = set(pick)
    out = os.path.join(dst, "VOC2007")
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
    for i in pick:
        shutil.copyfile(os.path.join(voc, "Annotations", i + ".xml"), os.path.join(out, "Annotations", i + ".xml"))
        shutil.copyfile(os.path.join(voc, "JPEGImages", i + ".jpg"), os.path.join(out, "JPEGImages", i + ".jpg"))
    main_dir = os.path.join(voc, "ImageSets", "Main")
    for name in sorted(os.listdir(main_dir)):
        with open(os.path.join(main_dir, name)) as f:
            lines = [line for line in f if line.split() and line.split()[0] in keep]
        if lines:
            with open(os.path.join(out, "ImageSets", "Main", name), "w") as f:
                f.writelines(lines)
    for name in ("pascal_train2007.json", "pascal_train2007_with_ignore.json"):
        with open(os.path.join(src, name)) as f:
            data = json.load(f)
        images = [im for im in data["images"] if os.path.splitext(im["file_name"])[0] in keep]
        image_ids = {im["id"] for im in images}
        data = {"images": images, "type": data.get("type", "instances"),
                "annotations": [a for a in data["annotations"] if a["image_id"] in image_ids],
                "categories": data["categories"]}
        with open(os.path.join(dst, name), "w") as f:
            json.dump(data, f)
    print(f"{len(pick)} images, {len(data['annotations'])} objects -> {dst}")


if __name__ == "__main__":
    main(*sys.argv[1:])
