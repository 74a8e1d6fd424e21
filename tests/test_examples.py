"""examples/: `voc_lesson.py --smoke` runs the lesson's whole recipe (two stages, validation every
epoch, test mAP) in seconds on a few sample images; the full run is a GPU job, not run here."""

import contextlib
import importlib.util
import io
import json
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_voc_lesson_smoke_runs_both_stages_and_prints_the_test_map(tmp_path):
    voc_lesson = _load("voc_lesson")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = voc_lesson.main(["--smoke", "--out", str(tmp_path)])
    text = out.getvalue()
    assert "stage 1/2, head only (body frozen): 1 epoch(s)" in text
    assert "stage 2/2, freeze_to(-2): upper body + head: 1 epoch(s)" in text
    assert "train 16 / val 8 / test 8 images" in text
    assert f"VOC07 test mAP (smoke run: meaningless): {result['map']:.3f}" in text
    for name in ("model.keras", "best.keras", "metrics.json", "stage1/log.csv", "stage2/log.csv"):
        assert (tmp_path / name).is_file(), name
    header = (tmp_path / "stage2" / "log.csv").read_text().splitlines()[0].split(",")
    assert {"val_loss", "val_loc", "val_clas", "val_map"} <= set(header)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["smoke"] is True and metrics["test_images"] == 8 and len(metrics["ap"]) == 20


def test_voc_lesson_needs_a_voc_folder_or_smoke(capsys):
    with pytest.raises(SystemExit) as e:
        _load("voc_lesson").parse_args([])
    assert e.value.code == 2 and "--voc PATH is required" in capsys.readouterr().err
