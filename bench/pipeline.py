"""Input pipeline throughput: images/s through decode + resize + augment + pad + batch.

    .venv/bin/python bench/pipeline.py            # full: 3 timed epochs per case
    .venv/bin/python bench/pipeline.py --quick    # 1 timed epoch per case

224x224, batch 32, the lesson's augmentations (flip, rotate 10 degrees, lighting), on the
shipped VOC2007 sample (200 real JPEGs, ~500x375) and on `shapes` (in-memory 128 px images,
no decoding). One warm-up epoch (graph tracing, thread pools) is not timed. `run()` returns a
list of dicts for `bench/run.py`.
"""

from __future__ import annotations

import argparse
import os
import time


def _time(ds, epochs):
    n = 0
    for _ in ds:  # warm-up epoch
        pass
    t = time.perf_counter()
    for _ in range(epochs):
        for x, _y in ds:
            n += int(x.shape[0])
    return n / (time.perf_counter() - t)


def run(quick=True, image_size=224, batch_size=32):
    from ssd_keras.data import SAMPLE_VOC, lesson_augmentations, make_dataset, make_shapes, read_voc

    epochs = 1 if quick else 3
    voc = read_voc(SAMPLE_VOC, "train")
    t = time.perf_counter()
    shapes = make_shapes(count=256 if quick else 1024, image_size=128)
    gen_s = (time.perf_counter() - t) / len(shapes)
    cases = [("voc2007_sample", voc, None), ("voc2007_sample", voc, lesson_augmentations(10)),
             ("shapes 128px", shapes, None), ("shapes 128px", shapes, lesson_augmentations(10))]
    rows = []
    for name, data, aug in cases:
        ds = make_dataset(data, image_size, batch_size, augment=aug, shuffle=True, seed=0)
        rows.append({"bench": "pipeline", "data": name, "images": len(data), "augment": aug is not None,
                     "image_size": image_size, "batch_size": batch_size, "cpus": os.cpu_count(),
                     "images_per_s": round(_time(ds, epochs), 1)})
    rows.append({"bench": "pipeline", "data": "shapes generation (numpy, 128px)", "images": len(shapes),
                 "augment": False, "image_size": 128, "batch_size": None, "cpus": os.cpu_count(),
                 "images_per_s": round(1.0 / gen_s, 1)})
    return rows


def markdown(rows):
    out = ["| data | images | augment | size | batch | img/s |", "|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['data']} | {r['images']} | {'yes' if r['augment'] else 'no'} | {r['image_size']} | "
                   f"{r['batch_size'] or '-'} | {r['images_per_s']} |")
    return "\n".join(out)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    print(markdown(run(quick=args.quick)))
