"""tf.distribute: fit_one_cycle (`model.fit`) under MirroredStrategy (two logical CPU devices)
and MultiWorkerMirroredStrategy (two worker processes on loopback, TF_CONFIG) gives the
losses, validation losses and weights of one device with the same global batch. Each
strategy runs in a fresh process (tests/_distribute_worker.py), since both must be set up
before TensorFlow initialises.

Under MultiWorkerMirroredStrategy, `fit` needs `ssd_keras.training.prepare_for_multi_worker`
(which `fit_one_cycle` applies): Keras 3.15 / TF 2.21 otherwise fail there twice
(keras-team/keras#20585); its docstring says how and why.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import _distribute_worker as worker

HERE = Path(__file__).parent
TIMEOUT = 240


@pytest.fixture(scope="module")
def reference():
    """One device (the default strategy), in this process: fit_one_cycle."""
    history, weights, _ = worker.train()
    return history, weights


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
               KERAS_BACKEND="tensorflow", PYTHONPATH=str(HERE.parent))
    env.update(extra)
    return env


def _check(result, reference):
    history, weights = reference
    assert {"loss", "loc", "clas", "val_loss", "val_loc", "val_clas"} <= set(history)
    for key in history:
        np.testing.assert_allclose(result[key], history[key], rtol=1e-5, err_msg=key)
    for i, w in enumerate(weights):
        np.testing.assert_allclose(result[f"w{i}"], w, rtol=1e-4, atol=1e-6)
    assert history["loss"][0] > 0


@pytest.mark.slow
def test_mirrored_two_logical_devices_match_one_device(tmp_path, reference):
    out = tmp_path / "mirrored.npz"
    proc = subprocess.run([sys.executable, str(HERE / "_distribute_worker.py"), "mirrored", str(out)],
                          env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = np.load(out)
    assert int(result["replicas"]) == 2
    assert not result["multi_worker_overrides"]  # one worker: fit needs no help
    _check(result, reference)


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _run_two_workers(tmp_path, name, args, expected=0, timeout=TIMEOUT, peer_lost_ok=False):
    """Two `_distribute_worker.py` processes on loopback (TF_CONFIG), `args(i)` the arguments of
    worker i; waits for both and checks their exit status. Returns the workers' logs.

    `peer_lost_ok`: a worker whose peer stopped while both were inside a collective fails with
    TensorFlow's "Socket closed" UnavailableError (exit 1) instead of reaching its own stop; when
    one worker stopped as expected, that failure counts as stopped too (which of the two happens
    depends only on timing)."""
    workers = [f"localhost:{p}" for p in _free_ports(2)]
    procs, logs = [], [tmp_path / f"{name}{i}.log" for i in range(2)]
    for i in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}
        with open(logs[i], "w") as log:  # a file, not a pipe: nothing blocks on a full buffer
            procs.append(subprocess.Popen(
                [sys.executable, str(HERE / "_distribute_worker.py"), *map(str, args(i))],
                env=_env(TF_CONFIG=json.dumps(tf_config)),
                stdout=log, stderr=subprocess.STDOUT))
    # A worker that fails leaves the other waiting in a collective: stop waiting then.
    deadline = time.monotonic() + timeout
    try:
        while (any(p.poll() is None for p in procs) and time.monotonic() < deadline
               and not any(p.poll() not in (None, expected) for p in procs if not peer_lost_ok)):
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    stopped = [p.returncode == expected for p in procs]
    for i, p in enumerate(procs):
        if peer_lost_ok and not stopped[i] and any(stopped) and p.returncode == 1:
            log = logs[i].read_text()
            if "UnavailableError" in log and "Socket closed" in log:
                continue
        assert p.returncode == expected, f"worker {i} (rc {p.returncode}):\n{logs[i].read_text()[-3000:]}"
    return logs


@pytest.mark.slow
def test_multiworker_fit_two_processes_match_one_device(tmp_path, reference):
    _run_two_workers(tmp_path, "worker", lambda i: ["multiworker", tmp_path / f"worker{i}.npz"])
    for i in range(2):
        result = np.load(tmp_path / f"worker{i}.npz")
        assert int(result["replicas"]) == 2
        assert result["multi_worker_overrides"]
        _check(result, reference)


@pytest.mark.slow
def test_multiworker_lesson_recipe_restart_continues_from_each_workers_backup(tmp_path):
    """`fit_lesson_recipe` (two stages: 2 steps head-only, then 2 epochs × 2 steps of everything)
    on two workers sharing one out_dir. Both stop abruptly after step 5 (mid-epoch 2 of stage
    2); restarted with resume=True they skip stage 1 (each worker's done marker), continue stage
    2 from each worker's own backup (end of its epoch 1), and end with the weights and losses of
    one uninterrupted run. Only the chief writes the shared files."""
    histories, weights = worker.train_recipe()  # one device, never stopped
    out = tmp_path / "run"

    _run_two_workers(tmp_path, "first", lambda i: ["restart", tmp_path / f"first{i}.npz", out, 5],
                     expected=worker.STOPPED, timeout=2 * TIMEOUT, peer_lost_ok=True)
    for i in range(2):
        assert not (tmp_path / f"first{i}.npz").exists()  # stopped before the end
        assert (out / "stage1" / f"worker{i}" / "done.weights.h5").is_file()
        backup = out / "stage2" / f"worker{i}" / "backup"
        assert (backup / "latest.weights.h5").is_file()
        # The last backup is from the end of stage 2's epoch 1; step 5 is lost with the process.
        assert json.loads((backup / "training_metadata.json").read_text())["epoch"] == 1
    # The shared files, written by the chief alone (no per-worker copies of them).
    assert (out / "last.keras").is_file() and (out / "stage1" / "log.csv").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["best.keras", "last.keras", "stage1", "stage2"]

    _run_two_workers(tmp_path, "again", lambda i: ["restart", tmp_path / f"again{i}.npz", out],
                     timeout=2 * TIMEOUT)
    for i in range(2):
        result = np.load(tmp_path / f"again{i}.npz")
        assert int(result["replicas"]) == 2
        assert int(result["stages_run"]) == 1  # stage 1 was done: skipped, weights loaded
        for key, values in histories[-1].items():  # stage 2's resumed epoch = the last one
            np.testing.assert_allclose(result[f"last_stage_{key}"], values[1:], rtol=1e-5, err_msg=key)
        for j, w in enumerate(weights):
            np.testing.assert_allclose(result[f"w{j}"], w, rtol=1e-4, atol=1e-6)
        assert not (out / "stage2" / f"worker{i}" / "backup").exists()  # removed when finished
        assert (out / "stage2" / f"worker{i}" / "done.weights.h5").is_file()
    assert len((out / "stage2" / "log.csv").read_text().splitlines()) >= 2


def test_prepare_for_multi_worker_leaves_single_worker_models_alone():
    # The two-worker behaviour is tested in tests/test_distribute.py (it needs two processes).
    import keras
    import tensorflow as tf

    from ssd_keras.distribute import prepare_for_multi_worker
    from test_training import _dense_model

    model, _ = _dense_model()
    assert prepare_for_multi_worker(model) is model
    assert prepare_for_multi_worker(model, tf.distribute.get_strategy()) is model
    for name in ("train_step", "test_step", "_maybe_symbolic_build"):
        assert name not in vars(model), name  # no per-instance override on one device
    with pytest.raises(TypeError, match="prepare_for_multi_worker: model must be a keras.Model"):
        prepare_for_multi_worker(keras.layers.Dense(2))
