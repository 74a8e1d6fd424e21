"""The walkthrough notebooks: each executes top to bottom without error, and the committed
copies are the generator's text with a complete set of outputs.

Execution uses nbclient with a kernel that runs the current interpreter (`sys.executable`, the
venv's python under `make test`; see `build_notebooks.this_python_kernel`), in `notebooks/` as
the working directory, with this process's environment (conftest: CPU only); the committed files
are never rewritten. About 3-5 minutes on 2 CPU cores in
all, so the seven run as separate tests that pytest-xdist can spread.
"""

import importlib.util
import os

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NB_DIR = os.path.join(ROOT, "notebooks")
CELL_TIMEOUT = 600  # seconds per cell: generous for a loaded 2-core CI machine


def _script(name):
    """`notebooks/<name>.py` as a module (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(NB_DIR, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _script("build_notebooks")
NAMES = sorted(GEN.NOTEBOOKS)
# Notebooks that need optional packages; they skip (with the reason) where these are missing.
NEEDS = {"07_keras_vs_pytorch.ipynb": ["torch"]}


def _read(name):
    return nbformat.read(os.path.join(NB_DIR, name), as_version=4)


def test_seven_notebooks_in_lesson_order():
    committed = sorted(f for f in os.listdir(NB_DIR) if f.endswith(".ipynb"))
    assert committed == NAMES
    assert [n[:2] for n in NAMES] == ["01", "02", "03", "04", "05", "06", "07"]


def test_checkpoints_the_notebooks_load_are_committed_and_small():
    """Every `assets/` file a notebook names exists; each <= 6 MB, all together <= 20 MB."""
    import re

    text = "\n".join(src for cells in GEN.NOTEBOOKS.values() for _, src in cells)
    named = set(re.findall(r"assets/[\w.]+", text))
    assert named, "no notebook loads a checkpoint"
    for path in named:
        assert os.path.isfile(os.path.join(NB_DIR, path)), f"{path} is named by a notebook but not committed"
    sizes = {f: os.path.getsize(os.path.join(NB_DIR, "assets", f)) for f in os.listdir(os.path.join(NB_DIR, "assets"))}
    assert all(v <= 6_000_000 for v in sizes.values()), sizes
    assert sum(sizes.values()) <= 20_000_000, sizes


def test_train_checkpoints_still_builds_the_committed_models():
    """The demo preset has moved on since the checkpoints were made; `CHECKPOINT_DETECTOR` and
    `CHECKPOINT_RECIPE` pin what they used, so the script builds the same architecture and loss
    as each file holds, and trains with the same recipe."""
    from ssd_keras.saving import load_model

    script = _script("train_checkpoints")
    for name, spec in script.MODELS.items():
        built = script.build_detector(name)
        saved = load_model(os.path.join(NB_DIR, "assets", spec["file"]))
        assert built.anchors == saved.anchors, name
        assert (built.backbone_name, built.head_filters, built.loss_settings, built.output_shape) == (
            saved.backbone_name, saved.head_filters, saved.loss_settings, saved.output_shape), name
        assert saved.metadata["batch_size"] == script.CHECKPOINT_RECIPE["batch_size"]
        assert saved.metadata["lr"] == script.CHECKPOINT_RECIPE["lr"]
        assert saved.metadata["train_images"] == script.CHECKPOINT_RECIPE["train_images"]


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_matches_generator(name):
    """Edit `notebooks/build_notebooks.py` and re-run it, never the .ipynb by hand."""
    committed = _read(name)
    expected = GEN.make_notebook(GEN.NOTEBOOKS[name])
    got = [(c.cell_type, c.source) for c in committed.cells]
    want = [(c.cell_type, c.source) for c in expected.cells]
    assert got == want, f"{name} differs from build_notebooks.py; run: python notebooks/build_notebooks.py {name[:2]}"


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_has_clean_outputs(name):
    """Outputs of one in-order run, no errors, and the pictures (as images) are there."""
    nb = _read(name)
    code = [c for c in nb.cells if c.cell_type == "code"]
    counts = [c.get("execution_count") for c in code]
    assert counts == list(range(1, len(code) + 1)), f"{name}: not one clean top-to-bottom run: {counts}"
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"], f"{name}: committed with an error output"
    images = [o for o in outputs if o.output_type in ("display_data", "execute_result")
              and any(k.startswith("image/") for k in o.get("data", {}))]
    assert images, f"{name}: no pictures in the committed outputs"
    size = os.path.getsize(os.path.join(NB_DIR, name))
    assert size < 3_000_000, f"{name}: {size / 1e6:.1f} MB; keep committed notebooks small (JPEG figures)"


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_executes(name):
    from nbclient.exceptions import CellExecutionError

    for module in NEEDS.get(name, []):
        pytest.importorskip(module, reason=f"{name} needs {module}")
    nb = _read(name)
    try:
        GEN.execute(nb, timeout=CELL_TIMEOUT)  # this interpreter's kernel, in notebooks/
    except CellExecutionError as e:
        pytest.fail(f"{name} failed:\n{str(e)[-4000:]}", pytrace=False)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code), f"{name}: not every cell ran"
