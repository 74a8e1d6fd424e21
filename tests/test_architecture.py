"""The module layering of docs/ARCHITECTURE.md holds: every ssd_keras module imports only from its
own layer or the layers above it, there are no import cycles, nothing outside `ssd_keras.reference`
imports torch, and `import ssd_keras` works on a machine without torch."""

import ast
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "ssd_keras")

# The layers of docs/ARCHITECTURE.md ("Modules as layers").
LAYERS = {
    0: ["boxes", "anchors", "_checks"],
    1: ["data", "data.records", "data.voc", "data.formats", "data.shapes", "data.sources",
        "data.augment", "data.pipeline", "data.splits"],
    2: ["layers", "backbones", "model", "convert"],
    3: ["matching", "losses", "decode"],
    4: ["inference"],
    5: ["presets", "detector", "lesson_models"],
    6: ["evaluation", "viz"],
    7: ["schedules", "optimizers", "distribute", "callbacks", "training", "recipes"],
    8: ["saving", "export"],
    9: ["cli", "__main__", "_environment", "__init__"],
}
LAYER_OF = {m: layer for layer, mods in LAYERS.items() for m in mods}


def _modules():
    for dirpath, _, files in os.walk(ROOT):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, f), ROOT)[:-3].replace(os.sep, ".")
                yield rel.removesuffix(".__init__") if rel != "__init__" else rel, os.path.join(dirpath, f)


def _imports(path):
    """(module imported, at module level?) for every ssd_keras / torch import in the file."""
    tree = ast.parse(open(path).read())
    top = set(id(n) for n in tree.body)
    out = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name.startswith("ssd_keras.") or name.split(".")[0] == "torch":
                out.append((name, id(node) in top))
    return out


def _target(name):
    name = name.removeprefix("ssd_keras.")
    while name and name not in LAYER_OF and not name.startswith("reference"):
        name = name.rpartition(".")[0]
    return name


MODULES = dict(_modules())


def test_every_module_has_a_layer():
    missing = [m for m in MODULES if m not in LAYER_OF and not m.startswith("reference")]
    assert not missing, f"add these modules to docs/ARCHITECTURE.md and LAYERS: {missing}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if not m.startswith("reference")))
def test_imports_go_only_to_the_same_or_higher_layers(module):
    bad = []
    for name, top in _imports(MODULES[module]):
        if name.split(".")[0] == "torch":
            bad.append(f"{name} (torch belongs in ssd_keras.reference only)")
            continue
        target = _target(name)
        if target.startswith("reference"):
            if top:  # a lazy import (for .pth files) raises the reference extra's ImportError
                bad.append(f"{name} (the reference code needs torch: import it lazily)")
        elif target and target != "data" and LAYER_OF[target] > LAYER_OF[module] and module != "__init__":
            bad.append(f"{name} (layer {LAYER_OF[target]} from layer {LAYER_OF[module]})")
    assert not bad, f"ssd_keras.{module} imports: {bad}"


def test_no_import_cycles_at_module_level():
    graph = {m: {_target(n) for n, top in _imports(p) if top and n.startswith("ssd_keras.")} - {m, ""}
             for m, p in MODULES.items()}
    for m in graph:  # a package imports its own modules; that is not a cycle back into them
        graph[m] = {t for t in graph[m] if not (m in ("__init__", "data") and t != m)}
    state = {}

    def visit(m, stack):
        state[m] = "open"
        for t in graph.get(m, ()):
            if state.get(t) == "open":
                raise AssertionError(f"import cycle: {' -> '.join(stack + [m, t])}")
            if t not in state:
                visit(t, stack + [m])
        state[m] = "done"

    for m in graph:
        if m not in state:
            visit(m, [])


def test_import_and_train_without_torch(tmp_path):
    """`import ssd_keras`, fit and predict in a process where torch cannot be imported."""
    script = textwrap.dedent("""
        import sys
        sys.modules["torch"] = None  # any import of torch now raises ImportError
        import numpy as np
        import ssd_keras
        d = ssd_keras.SSDDetector(["a"], backbone="tiny", image_size=64, head_filters=8)
        d.compile()
        x = np.zeros((2, 64, 64, 3), np.float32)
        y = np.array([[[0.1, 0.1, 0.6, 0.6, 0]]] * 2, np.float32)
        d.fit(x, y, epochs=1, verbose=0)
        print(d.predict(x, verbose=0)["boxes"].shape)
        try:
            import ssd_keras.reference
        except ImportError as e:
            print("reference:", e)
    """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "(2, 100, 4)" in proc.stdout
    assert "pip install 'ssd_keras[reference]'" in proc.stdout


def test_other_keras_backends_are_refused_at_import():
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", "import ssd_keras"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode != 0
    assert "ssd_keras needs the TensorFlow backend of Keras, but KERAS_BACKEND='jax'" in proc.stderr
