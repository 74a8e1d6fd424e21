"""Environment settings that must be made before TensorFlow is imported, for the command line only.

`import ssd_keras` imports TensorFlow, so `python -m ssd_keras` (or the `ssd_keras` script) sets
these in the package's `__init__`, before that import, and nowhere else — a library import
never changes the environment:

* `TF_CPP_MIN_LOG_LEVEL=2` hides TensorFlow's C++ start-up lines (CUDA probing, CPU feature
  notes) unless `-v` / `--verbose` is given or the variable is already set;
* `TF_ENABLE_ONEDNN_OPTS=1` turns on TensorFlow's oneDNN CPU kernels, which TensorFlow enables
  by itself only on CPUs with AVX-512 VNNI and the like; on AVX2-only CPUs they made the lesson's
  training step 1.3-1.4x faster on 2026-11-29 and 1.19x on 2026-12-02 (bench/README.md).
  `--no-onednn`, or setting the variable yourself, keeps TensorFlow's choice.

`freeze_imported_objects` (called by the command line's process entry points once TensorFlow
and Keras are imported, never by library code) moves every object alive at that point out of
Python's cyclic garbage collector's reach (`gc.freeze()`): TensorFlow and Keras leave ~3 x 10^5
long-lived objects, and the full collections that walked them during training cost the demo
one epoch in four (8000 shapes images at 64 px: 48.7-51.2 s → 42.6 s for three epochs).
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys

#: What `configure_for_cli` did: {"onednn": "set by ssd_keras" | "user" | "TensorFlow's default" |
#: "off (--no-onednn)", "quiet": bool}; empty when not run as the command line.
CLI_ENVIRONMENT: dict = {}


def launched_as_cli(argv=None, orig_argv=None):
    """True for `python -m ssd_keras ...` and the installed `ssd_keras` script."""
    orig = list(getattr(sys, "orig_argv", []) if orig_argv is None else orig_argv)
    argv = list(sys.argv if argv is None else argv)
    for i, arg in enumerate(orig[:-1]):
        if arg == "-m":
            return orig[i + 1] == "ssd_keras"
    return bool(argv) and os.path.basename(argv[0]) == "ssd_keras"


def configure_for_cli(argv=None, orig_argv=None, environ=None):
    """Set the variables above when launched as the command line; returns `CLI_ENVIRONMENT`."""
    environ = os.environ if environ is None else environ
    argv = list(sys.argv if argv is None else argv)
    if not launched_as_cli(argv, orig_argv):
        return CLI_ENVIRONMENT
    verbose = "-v" in argv or "--verbose" in argv
    if not verbose and "TF_CPP_MIN_LOG_LEVEL" not in environ:
        environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    CLI_ENVIRONMENT["quiet"] = not verbose
    if "TF_ENABLE_ONEDNN_OPTS" in environ:
        CLI_ENVIRONMENT["onednn"] = f"TF_ENABLE_ONEDNN_OPTS={environ['TF_ENABLE_ONEDNN_OPTS']} (yours)"
    elif "--no-onednn" in argv:
        CLI_ENVIRONMENT["onednn"] = "TensorFlow's default (--no-onednn)"
    else:
        environ["TF_ENABLE_ONEDNN_OPTS"] = "1"
        CLI_ENVIRONMENT["onednn"] = "on (set by ssd_keras; --no-onednn for TensorFlow's default)"
    return CLI_ENVIRONMENT


@contextlib.contextmanager
def quiet_native_stderr():
    """Silence the process's stderr (file descriptor 2) for the duration, when the command line
    runs quiet: TensorFlow's CUDA probing writes straight to fd 2 through absl before it reads
    `TF_CPP_MIN_LOG_LEVEL`, so the variable alone does not hide those lines. A no-op otherwise."""
    if not CLI_ENVIRONMENT.get("quiet"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def freeze_imported_objects():
    """`gc.freeze()` for the command-line process (see the module doc); returns how many
    objects were frozen."""
    gc.collect()  # garbage left from start-up goes first, so it is not kept for good
    gc.freeze()
    return gc.get_freeze_count()
