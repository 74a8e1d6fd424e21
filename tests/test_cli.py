"""`python -m ssd_keras ...`: help, argument errors, and tiny end-to-end runs of every command.

Commands run in-process through `ssd_keras.cli.main(argv)`; only one `--help` and one error
path go through a real `python -m ssd_keras` subprocess. Sizes are tiny (64 px, a few images,
one epoch): these tests check the plumbing, the real demo's mAP is measured by bench/demo.py.
"""

import contextlib
import io
import json
from pathlib import Path
import os
import subprocess
import sys

import numpy as np
import pytest

from ssd_keras.cli import main

COMMANDS = ["demo", "train", "evaluate", "predict", "export"]


# Outputs that cannot be written: checked before any work (the model named does not exist).
A_FILE, A_DIR = str(Path(__file__).resolve()), str(Path(__file__).resolve().parent)
A_DIR_TFLITE = str(Path(__file__).resolve().parent / "fixtures" / "folder.tflite")  # a folder, kept in git


def run_cli(argv):
    """`main(argv)` with stdout/stderr captured: returns `(status, stdout, stderr)`."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One tiny demo run whose model the evaluate/predict/export tests reuse."""
    out = tmp_path_factory.mktemp("demo")
    status, stdout, stderr = run_cli([
        "demo", "--out", out, "--epochs", "1", "--image-size", "64", "--train-images", "32",
        "--val-images", "8", "--batch-size", "16",
    ])
    return out, status, stdout, stderr


@pytest.mark.parametrize("command", [None] + COMMANDS)
def test_help_for_each_command_shows_defaults(command):
    status, stdout, _ = run_cli(([command] if command else []) + ["--help"])
    assert status == 0
    assert "usage: ssd_keras" in stdout
    if command:
        assert "(default:" in stdout


def test_help_through_python_dash_m():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-m", "ssd_keras", "demo", "--help"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0
    assert "--image-size IMAGE_SIZE" in proc.stdout and "(default: 64)" in proc.stdout
    assert "resnet34" in proc.stdout  # the lesson's configuration is documented one flag away


def test_user_error_through_python_dash_m_is_a_message_not_a_traceback(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-m", "ssd_keras", "evaluate", "--model", str(tmp_path / "nope.keras")],
        capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert "ssd_keras evaluate: error: argument --model: model file not found" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("argv, message", [
    (["demo", "--epochs", "0"], "argument --epochs: expected a positive integer, got '0'"),
    (["demo", "--image-size", "16"], "argument --image-size: image size must be at least 32"),
    (["demo", "--lr", "-1"], "argument --lr: expected a positive number"),
    (["demo", "--focal", "0.25"], "argument --focal: expected 2 arguments"),
    (["demo", "--focal", "2", "1"], "argument --focal: focal=(alpha, gamma) needs 0 <= alpha <= 1"),
    (["demo", "--focal", "0.25", "1", "--bce"], "argument --bce: not allowed with argument --focal"),
    (["train", "--val-fraction", "1.5"], "argument --val-fraction: expected a number in (0, 1)"),
    (["train", "--on-error", "ignore"], "argument --on-error: invalid choice: 'ignore'"),
    (["train", "--data", "csv:/no/such.csv"], "argument --data: cannot load 'csv:/no/such.csv'"),
    (["demo", "--backbone", "vgg"], "argument --backbone: invalid choice: 'vgg'"),
    (["demo", "--min-size", "0.5", "--max-size", "0.3"],
     "argument --min-size: need 0 < --min-size <= --max-size, got 0.5 and 0.3"),
    (["demo", "--min-size", "1.5"], "argument --min-size: expected a number in [0, 1], got '1.5'"),
    (["demo", "--augment", "mixup"], "argument --augment: invalid choice: 'mixup'"),
    (["demo", "--loc-weight", "nan"], "argument --loc-weight: expected a positive number, got 'nan'"),
    (["demo", "--grids", "0"], "argument --grids: expected a positive integer, got '0'"),
    (["demo", "--zooms", "1", "-1"], "argument --zooms: expected a positive number, got '-1'"),
    # tiny8's 8x8 map at 64 px halves to 4, 2, 1: never 3.
    (["demo", "--grids", "3", "2", "1"], "argument --grids: build_ssd(backbone='tiny8'): the backbone's "
                                         "8x8 feature map (image_size=64) cannot reach anchors.grids=(3, 2, 1)"),
    (["train", "--backbone", "tiny8", "--image-size", "64", "--weights", "none", "--train-images", "8",
      "--grids", "8", "4", "3"], "argument --grids: build_ssd(backbone='tiny8'): the backbone's 8x8"),
    # Checked before the data is read: the missing file is never reached.
    (["train", "--data", "csv:/no/such.csv", "--backbone", "tiny8", "--image-size", "64", "--grids", "3", "1"],
     "argument --grids: build_ssd(backbone='tiny8'): the backbone's 8x8 feature map (image_size=64)"),
    (["train", "--head-filters", "0"], "argument --head-filters: expected a positive integer, got '0'"),
    (["train", "--seed", "-1"], "argument --seed: expected an integer in [0, 2**32), got '-1'"),
    (["demo", "--dropout", "1"], "argument --dropout: expected a number in [0, 1), got '1'"),
    (["demo", "--out", A_FILE], f"argument --out: {A_FILE} is a file; --out names a folder to write into"),
    (["train", "--out", f"{A_FILE}/run"], f"argument --out: {A_FILE} is a file, so {A_FILE}/run cannot be written"),
    (["evaluate", "--model", "m.keras", "--json", A_DIR], f"argument --json: {A_DIR} is a folder; --json names a file"),
    (["predict", "--model", "m.keras", "x.jpg", "--out", A_FILE], f"argument --out: {A_FILE} is a file"),
    (["export", "--model", "m.keras", "--out", A_FILE], f"argument --out: {A_FILE} is a file"),
    (["export", "--model", "m.keras", "--format", "tflite", "--out", A_DIR_TFLITE],
     f"argument --out: {A_DIR_TFLITE} is a folder; --out names a file"),
    (["train", "--data", "imagenet"], "argument --data: unknown data source 'imagenet'"),
    (["train", "--data", "voc"], "argument --data: unknown data source 'voc'"),
    (["train", "--classes", "mug,spoon"], "argument --classes: a shapes source names its own classes"),
    (["train", "--data", "csv:x.csv", "--classes", "mug,mug"], "argument --classes: a class name is given twice"),
    (["train", "--weights", "/no/such/file.weights.h5"], "argument --weights: file not found"),
    (["evaluate"], "the following arguments are required: --model"),
    (["export", "--model", "m.keras", "--format", "onnx", "--out", "x"], "argument --format: invalid choice"),
])
def test_bad_arguments_are_named(argv, message):
    status, _, stderr = run_cli(argv)
    assert status == 2
    assert message in stderr
    assert "Traceback" not in stderr


def test_demo_end_to_end_writes_picture_model_and_metrics(demo_run):
    out, status, stdout, stderr = demo_run
    assert status == 0, stderr
    lines = stdout.splitlines()
    map_lines = [line for line in lines if line.startswith("mAP: ")]
    assert len(map_lines) == 1 and lines[-1] == map_lines[0]
    value = float(map_lines[0].split()[1])
    assert 0.0 <= value <= 1.0
    assert (out / "detections.png").stat().st_size > 1000
    assert (out / "detections.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["map"] == pytest.approx(value, abs=5e-4)
    assert set(metrics["ap"]) == {"circle", "square", "triangle", "diamond", "cross", "ring"}
    assert (out / "model.keras").is_file()
    # The settings that produced the number are recorded with it (the demo's defaults here).
    assert (metrics["min_size"], metrics["max_objects"], metrics["augment"]) == (0.2, 4, "flip")
    assert (metrics["head_filters"], metrics["pos_threshold"], metrics["loc_weight"]) == (64, 0.3, 4.0)
    assert metrics["anchors"] == {"grids": [8, 4, 2, 1], "zooms": [1.0, 1.3],
                                  "ratios": [[1.0, 1.0], [1.0, 0.5], [0.5, 1.0]]}


def test_demo_grids_and_zooms_flags_give_the_lessons_anchors(tmp_path):
    status, _, stderr = run_cli(["demo", "--out", tmp_path, "--epochs", "1", "--train-images", "8",
                                 "--val-images", "4", "--batch-size", "8",
                                 "--grids", "4", "2", "1", "--zooms", "0.7", "1", "1.3"])
    assert status == 0, stderr
    from ssd_keras.saving import load_model

    model = load_model(tmp_path / "model.keras")
    assert (model.anchors.grids, model.anchors.zooms, model.anchors.num_anchors) == (
        (4, 2, 1), (0.7, 1.0, 1.3), 189)


def test_evaluate_uses_the_demo_models_shapes_settings(demo_run, tmp_path):
    """`evaluate --data shapes` on a demo model measures the held-out images the demo used
    (1-4 objects of 20-60%, as many as the demo), not make_shapes' harder default, so the two
    mAPs agree."""
    out = demo_run[0]
    val_images = 8
    # No --max-images: the model also records how many held-out images the demo used.
    status, stdout, stderr = run_cli(["evaluate", "--model", out / "model.keras", "--data", "shapes",
                                      "--json", tmp_path / "m.json"])
    assert status == 0, stderr
    from ssd_keras.data import make_shapes

    demo_val = make_shapes(val_images, image_size=64, split="val", min_size=0.2, max_objects=4)
    hard_val = make_shapes(val_images, image_size=64, split="val")
    assert demo_val.num_objects != hard_val.num_objects  # so that the count below tells them apart
    assert f"{val_images} images, {demo_val.num_objects} objects" in stdout
    demo_map = json.loads((out / "metrics.json").read_text())["map"]
    assert json.loads((tmp_path / "m.json").read_text())["map"] == pytest.approx(demo_map, abs=1e-6)


def test_evaluate_reads_the_model_metadata_and_prints_per_class_ap(demo_run, tmp_path):
    out = demo_run[0]
    status, stdout, stderr = run_cli(["evaluate", "--model", out / "model.keras", "--data", "shapes",
                                      "--max-images", "8", "--batch-size", "8",
                                      "--json", tmp_path / "m.json"])
    assert status == 0, stderr
    assert stdout.splitlines()[-1].startswith("mAP: ")
    assert "circle" in stdout and "AP" in stdout
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["metric"] == "voc07-11-point" and len(saved["ap"]) == 6


def test_predict_writes_pictures_and_json_with_relative_and_pixel_boxes(demo_run, tmp_path):
    from PIL import Image

    out = demo_run[0]
    rng = np.random.default_rng(0)
    image_path = tmp_path / "photo.jpg"
    Image.fromarray(rng.integers(0, 255, (48, 80, 3), dtype=np.uint8)).save(image_path)
    status, stdout, stderr = run_cli(["predict", "--model", out / "model.keras", image_path,
                                      "--out", tmp_path / "pred", "--score-threshold", "0.0",
                                      "--max-detections", "5"])
    assert status == 0, stderr
    assert (tmp_path / "pred" / "photo.png").read_bytes()[:4] == b"\x89PNG"
    results = json.loads((tmp_path / "pred" / "detections.json").read_text())["images"]
    assert results[0]["width"] == 80 and results[0]["height"] == 48
    dets = results[0]["detections"]
    assert 0 < len(dets) <= 5
    for d in dets:
        ymin, xmin, ymax, xmax = d["box_rel_yxyx"]
        assert d["box_xyxy"] == pytest.approx([xmin * 80, ymin * 48, xmax * 80, ymax * 48])
        assert d["class"] in {"circle", "square", "triangle", "diamond", "cross", "ring"}


def test_predict_names_an_unreadable_image(demo_run, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    status, _, stderr = run_cli(["predict", "--model", demo_run[0] / "model.keras", bad])
    assert status == 2
    assert "argument IMAGE:" in stderr and "broken.jpg" in stderr and "--on-error skip" in stderr


def test_a_bad_file_in_the_data_names_the_file_and_the_cli_flag():
    voc = Path(__file__).parent / "fixtures" / "voc" / "VOC2007"
    status, _, stderr = run_cli(["train", "--data", f"voc:{voc}", "--train-split", "bad_corrupt",
                                 "--backbone", "tiny", "--weights", "none"])
    assert status == 2 and "Traceback" not in stderr
    assert "argument --data:" in stderr and "bad_corrupt.jpg: truncated JPEG" in stderr
    # The CLI's flag, not the library's keyword argument.
    assert "pass --on-error skip to skip such images" in stderr and "on_error=" not in stderr


def test_train_counts_skipped_images_against_all_it_read(tmp_path):
    # One CSV read, cut into training and held-out parts: "skipped 1 of 5", not "of 3".
    from ssd_keras.data import SAMPLE_VOC, load_source, write_csv

    data = load_source(f"voc:{SAMPLE_VOC}", split="train")
    data.records = data.records[:4]
    csv = tmp_path / "d.csv"
    write_csv(data, csv)
    with open(csv, "a") as f:
        f.write("missing.jpg,1 1 20 20,dog\n")
    status, stdout, stderr = run_cli(["train", "--data", f"csv:{csv}", "--on-error", "skip", "--val-fraction", "0.25",
                                      "--backbone", "tiny", "--image-size", "64", "--weights", "none",
                                      "--epochs", "1", "--batch-size", "2", "--out", tmp_path / "run"])
    assert status == 0, stderr
    assert "skipped 1 of 5 images: " in stdout and "missing.jpg: image file missing" in stdout


def test_predict_skips_unreadable_images_and_writes_the_good_ones(demo_run, tmp_path):
    from PIL import Image

    good = tmp_path / "good.png"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(good)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    missing = tmp_path / "missing.jpg"
    status, stdout, stderr = run_cli(["predict", "--model", demo_run[0] / "model.keras", good, bad, missing,
                                      "--out", tmp_path / "pred", "--on-error", "skip"])
    assert status == 0, stderr
    saved = json.loads((tmp_path / "pred" / "detections.json").read_text())
    assert [r["image"] for r in saved["images"]] == [str(good)]
    assert [s["image"] for s in saved["skipped"]] == [str(bad), str(missing)]
    assert "skipped 2 of 3 images" in stdout
    assert (tmp_path / "pred" / "good.png").is_file()


def test_export_from_the_command_line(demo_run, tmp_path):
    model = demo_run[0] / "model.keras"
    status, _, stderr = run_cli(["export", "--model", model, "--out", tmp_path / "sm"])
    assert status == 0, stderr
    assert (tmp_path / "sm" / "saved_model.pb").is_file()
    assert json.loads((tmp_path / "sm" / "ssd_keras.json").read_text())["class_names"][0] == "circle"
    # (TFLite conversion itself is tested in test_export.py; here only the flag checks.)
    status, _, stderr = run_cli(["export", "--model", model, "--format", "tflite",
                                 "--out", tmp_path / "m.bin"])
    assert status == 2 and "argument --out: a TFLite file name must end in .tflite" in stderr
    status, _, stderr = run_cli(["export", "--model", model, "--out", tmp_path / "x", "--nms"])
    assert status == 2 and "apply to --format tflite only" in stderr


def test_train_writes_the_model_and_refuses_to_clobber_a_run(tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--data", "shapes", "--backbone", "tiny", "--image-size", "64", "--epochs", "1",
            "--batch-size", "8", "--train-images", "16", "--val-split", "none", "--out", out]
    status, stdout, stderr = run_cli(argv)
    assert status == 0, stderr
    # The stage's description once, in the plan printed before training; its start by name.
    assert stdout.count("from scratch, all layers trainable: 1 epoch(s)") == 1
    assert stdout.index("from scratch, all layers trainable: 1 epoch(s)") < stdout.index(
        "from scratch, all layers trainable: starting")
    assert (out / "model.keras").is_file() and (out / "stage1" / "log.csv").is_file()
    status, _, stderr = run_cli(argv)
    assert status == 2 and "argument --out:" in stderr and "--resume" in stderr
