"""Which held-out objects a demo model never boxes at IoU 0.5, and why.

Under the VOC07 11-point metric a class with one such object loses its recall-1.0 point
(1/11 of its AP), so these few objects decide whether the demo reaches mAP 0.90. For each one:
its side, its best same-class detection (IoU, score), the best detection of any class, its best
anchor's IoU (at or below the match threshold, only `map_to_ground_truth`'s forced anchor
learns its box) and its largest overlap with another object (NMS merging two objects).

    python bench/demo_misses.py out/demo/model.keras

The held-out images are rebuilt from the model's metadata, as `python -m ssd_keras evaluate`
does.
"""

import argparse

import numpy as np


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model", help="a .keras file written by `python -m ssd_keras demo`")
    p.add_argument("--iou", type=float, default=0.5, help="IoU a detection needs to count")
    a = p.parse_args(argv)

    from ssd_keras.boxes import jaccard
    from ssd_keras.data import make_dataset
    from ssd_keras.data.splits import held_out
    from ssd_keras.evaluation import evaluate_model
    from ssd_keras.saving import load_model

    detector = load_model(a.model)
    meta = detector.metadata
    if meta.get("data") != "shapes":
        raise SystemExit(f"{a.model}: not a model trained on shapes (metadata data={meta.get('data')!r})")
    val = held_out("shapes", meta["split"], image_size=detector.image_size, **meta["shapes"])
    count = len(val)
    ds = make_dataset(val, image_size=detector.image_size, batch_size=50)
    result = evaluate_model(detector, ds, ground_truths=val.ground_truths(), iou_threshold=a.iou)
    anchors = np.asarray(detector.anchors.corners)
    names, px = detector.class_names, detector.image_size
    threshold = detector.loss_settings["pos_threshold"]
    print(f"{a.model}: mAP {result['map']:.4f} at IoU {a.iou}, {count} held-out images, "
          f"{detector.anchors.num_anchors} anchors, match IoU {threshold}")
    missed = uncovered = 0
    for i, ((boxes, scores, classes), (gt_boxes, gt_classes, _)) in enumerate(
            zip(result["detections"], result["ground_truths"])):
        boxes, scores, classes = (np.asarray(x) for x in (boxes, scores, classes))
        gt_boxes, gt_classes = np.asarray(gt_boxes), np.asarray(gt_classes)
        for j, box in enumerate(gt_boxes):
            ious = np.asarray(jaccard(box[None], boxes))[0] if len(boxes) else np.zeros(0)
            same = classes == gt_classes[j]
            if same.any() and ious[same].max() >= a.iou:
                continue
            missed += 1
            best_anchor = float(np.asarray(jaccard(box[None], anchors)).max())
            uncovered += best_anchor <= threshold
            others = np.asarray(jaccard(box[None], gt_boxes))[0]
            others[j] = 0.0
            side = np.sqrt((box[2] - box[0]) * (box[3] - box[1]))
            line = (f"image {i:3d} object {j} {names[gt_classes[j]]:8s} side {side:.2f} "
                    f"box {np.round(box * px).astype(int).tolist()} px; best anchor IoU {best_anchor:.2f}; ")
            if same.any():
                k = int(np.argmax(np.where(same, ious, -1.0)))
                line += f"best {names[gt_classes[j]]} box IoU {ious[k]:.2f} (score {scores[k]:.3f}); "
            else:
                line += f"no {names[gt_classes[j]]} box; "
            if len(ious):
                k = int(np.argmax(ious))
                line += f"best box of any class IoU {ious[k]:.2f} ({names[classes[k]]}); "
            print(line + f"largest overlap with another object {others.max():.2f}")
    total = sum(len(g[0]) for g in result["ground_truths"])
    print(f"{missed} of {total} objects never boxed at IoU {a.iou} by their class; {uncovered} of "
          f"them overlap no anchor above the match IoU {threshold}")
    print("largest recall per class:", {n: round(float(r.max()), 3) if len(r) else 0.0
                                        for n, r in zip(names, result["recall"])})


if __name__ == "__main__":
    main()
