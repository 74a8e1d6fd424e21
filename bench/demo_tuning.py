"""One run of the demo's tuning sweep: train the lesson's multi-grid SSD on `shapes` with the
given settings and report held-out mAP at IoU 0.5 (VOC07 11-point), 0.3 and 0.7, the
class-agnostic mAP, the all-point mAP and each class's largest recall at IoU 0.5, and the time.

    python bench/demo_tuning.py --body tiny8 --batch 64 --lr 6e-3 --n 24000 --epochs 4 \\
        --min-size 0.2 --max-objects 4 --flip --dropout 0 --pos 0.3 --loc-weight 4 \\
        --head-filters 64 --grids 8,4,2,1 --zooms 1,1.3 --focal 0.25,1 \\
        --tag demo_default    # the demo's settings (2026-12-02, morning)

Each run appends one JSON line to `--results` (default bench/results/demo_tuning.jsonl). The
runs behind the demo's defaults, and what they showed, are in `bench/README.md`. The IoU 0.3 /
0.7 and class-agnostic numbers tell localisation, detection and classification errors apart.
"""

import argparse
import json
import time
from pathlib import Path


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=64, help="image side (px)")
    p.add_argument("--n", type=int, default=6000, help="generated training images")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3, help="one-cycle peak LR")
    p.add_argument("--dropout", type=float, default=0.1, help="head dropout")
    p.add_argument("--min-size", type=float, default=0.12, help="shapes: smallest object side")
    p.add_argument("--max-size", type=float, default=0.6, help="shapes: largest object side")
    p.add_argument("--max-objects", type=int, default=8, help="shapes: objects per image at most")
    p.add_argument("--body", choices=("tiny", "tiny8"), default="tiny",
                   help="tiny (stride 16, widths from --filters) or tiny8 (tiny's first 3 stages, stride 8)")
    p.add_argument("--filters", default="32,64,96,128", help="tiny body stage widths")
    p.add_argument("--head-filters", type=int, default=256)
    p.add_argument("--focal", default=None, help="ALPHA,GAMMA for the focal loss (default BCE)")
    p.add_argument("--loc-weight", type=float, default=1.0)
    p.add_argument("--pos", type=float, default=0.4, help="match IoU threshold")
    p.add_argument("--flip", action="store_true", help="random horizontal flips")
    p.add_argument("--grids", default="4,2,1", help="anchor grids (the lesson's 4,2,1)")
    p.add_argument("--zooms", default="0.7,1,1.3", help="anchor zooms (the lesson's 0.7,1,1.3)")
    p.add_argument("--val", type=int, default=300, help="held-out images")
    p.add_argument("--tag", default="run")
    p.add_argument("--results", type=Path, default=Path(__file__).parent / "results" / "demo_tuning.jsonl")
    p.add_argument("--save", type=Path, default=None, help="also save the model (.keras) here")
    return p.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    import keras
    import numpy as np

    from ssd_keras.anchors import AnchorConfig
    from ssd_keras.backbones import get_backbone, tiny_body
    from ssd_keras.data import RandomFlip, make_dataset, make_shapes
    from ssd_keras.losses import SSDLoss
    from ssd_keras.evaluation import evaluate_detections, evaluate_model
    from ssd_keras.model import build_ssd
    from ssd_keras.training import fit_one_cycle

    keras.utils.set_random_seed(0)
    t0 = time.time()
    shapes = dict(image_size=a.size, seed=0, min_size=a.min_size, max_size=a.max_size,
                  max_objects=a.max_objects)
    train, val = make_shapes(a.n, split="train", **shapes), make_shapes(a.val, split="val", **shapes)
    gen_s = time.time() - t0
    anchors = AnchorConfig(grids=[int(g) for g in a.grids.split(",")],
                           zooms=[float(z) for z in a.zooms.split(",")])
    num_classes = len(train.class_names)
    train_ds = make_dataset(train.records, image_size=a.size, batch_size=a.batch, shuffle=True,
                            seed=0, augment=[RandomFlip()] if a.flip else None)
    val_ds = make_dataset(val.records, image_size=a.size, batch_size=50)
    if a.body == "tiny8":
        body = get_backbone("tiny8", input_shape=(a.size, a.size, 3))
    else:
        body = tiny_body((a.size, a.size, 3), filters=tuple(int(f) for f in a.filters.split(",")))
    model = build_ssd(num_classes, anchors, backbone=body, image_size=a.size, dropout=a.dropout,
                      head_filters=a.head_filters)
    focal = None if a.focal is None else tuple(float(x) for x in a.focal.split(","))
    loss = SSDLoss(anchors, num_classes, focal=focal, loc_weight=a.loc_weight, pos_threshold=a.pos)
    t1 = time.time()
    # jit_compile=False as in the CLI on CPU (oneDNN convolutions beat XLA's there).
    history = fit_one_cycle(model, train_ds, a.epochs, a.lr, loss=loss, verbose=0, jit_compile=False)
    train_s = time.time() - t1

    held_out = evaluate_model(model, val_ds, anchors, num_classes, score_threshold=0.01)
    detections, truths = held_out["detections"], held_out["ground_truths"]
    maps = {0.5: held_out}
    maps.update({iou: evaluate_detections(detections, truths, num_classes, iou) for iou in (0.3, 0.7)})
    agnostic = evaluate_detections([(b, s, np.zeros_like(c)) for b, s, c in detections],
                                   [(b, np.zeros_like(c), d) for b, c, d in truths], 1, 0.5)
    # The 11-point AP counts precision at recall 1.0: a class with one object never boxed at
    # IoU 0.5 loses 1/11 there. The all-point AP (VOC 2010+) and the max recall show that.
    all_point = evaluate_detections(detections, truths, num_classes, 0.5, use_07_metric=False)
    row = dict(args={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
               map=round(maps[0.5]["map"], 3), map03=round(maps[0.3]["map"], 3),
               map07=round(maps[0.7]["map"], 3), agnostic=round(agnostic["map"], 3),
               map_all_point=round(all_point["map"], 3),
               max_recall=[round(float(r.max()), 3) if len(r) else 0.0 for r in held_out["recall"]],
               ap=[round(float(x), 2) for x in maps[0.5]["ap"]], train_s=round(train_s),
               gen_s=round(gen_s), params=model.count_params(),
               hist={k: [round(float(x), 4) for x in v] for k, v in history.history.items()})
    print(json.dumps(row))
    a.results.parent.mkdir(parents=True, exist_ok=True)
    with open(a.results, "a") as f:
        f.write(json.dumps(row) + "\n")
    if a.save:
        model.save(a.save)


if __name__ == "__main__":
    main()
