"""Data for ssd_keras: readers, the embedded `shapes` set, box-aware augmentation, tf.data.

Boxes are relative yxyx everywhere (docs/ARCHITECTURE.md); pixel boxes exist only inside the readers.

    data = load_source("shapes")                       # or "voc:/path/VOCdevkit/VOC2007", ...
    ds = data.dataset(image_size=128, batch_size=32, augment=lesson_augmentations(), shuffle=True, seed=0)
"""

from ssd_keras.data.augment import (
    RandomFlip,
    RandomLighting,
    RandomRotate,
    apply_augmentations,
    clip_and_filter,
    lesson_augmentations,
    rotate_boxes,
    rotate_image,
)
from ssd_keras.data.formats import read_coco_json, read_csv, write_csv
from ssd_keras.data.pipeline import letterbox, make_dataset, pad_targets
from ssd_keras.data.records import VOC_CLASSES, DetectionData, Record, multi_labels
from ssd_keras.data.shapes import SHAPE_CLASSES, make_shapes
from ssd_keras.data.sources import SAMPLE_VOC, SourceUnavailable, load_source, read_tfds
from ssd_keras.data.voc import parse_voc_xml, read_voc, relative_to_voc, voc_to_relative

__all__ = [
    "DetectionData", "RandomFlip", "RandomLighting", "RandomRotate", "Record", "SAMPLE_VOC",
    "SHAPE_CLASSES", "SourceUnavailable", "VOC_CLASSES", "apply_augmentations", "clip_and_filter",
    "lesson_augmentations", "letterbox", "load_source", "make_dataset", "make_shapes", "multi_labels",
    "pad_targets", "parse_voc_xml", "read_coco_json", "read_csv", "read_tfds", "read_voc",
    "relative_to_voc", "rotate_boxes", "rotate_image", "voc_to_relative", "write_csv",
]
