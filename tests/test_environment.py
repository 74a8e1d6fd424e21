"""ssd_keras/_environment.py: the command line's environment settings (before TensorFlow is
imported) and its garbage-collector freeze; library imports change nothing."""

import gc

import pytest

from ssd_keras import _environment as env


@pytest.fixture(autouse=True)
def fresh_record():
    saved = dict(env.CLI_ENVIRONMENT)
    env.CLI_ENVIRONMENT.clear()
    yield
    env.CLI_ENVIRONMENT.clear()
    env.CLI_ENVIRONMENT.update(saved)


@pytest.mark.parametrize("orig_argv, argv, expected", [
    (["python", "-m", "ssd_keras", "demo"], ["-m", "demo"], True),
    (["python", "-m", "pytest", "tests"], ["pytest", "tests"], False),
    (["python", "/venv/bin/ssd_keras", "train"], ["/venv/bin/ssd_keras", "train"], True),
    (["python", "script.py"], ["script.py"], False),
])
def test_launched_as_cli(orig_argv, argv, expected):
    assert env.launched_as_cli(argv, orig_argv) is expected


def test_library_use_changes_nothing():
    environ = {}
    assert env.configure_for_cli(["script.py"], ["python", "script.py"], environ) == {}
    assert environ == {}


def test_cli_hides_native_logs_and_turns_onednn_on():
    environ = {}
    record = env.configure_for_cli(["-m", "demo"], ["python", "-m", "ssd_keras", "demo"], environ)
    assert environ == {"TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "1"}
    assert record["quiet"] is True and record["onednn"].startswith("on (set by ssd_keras")


def test_cli_respects_the_users_choices():
    environ = {"TF_ENABLE_ONEDNN_OPTS": "0"}
    record = env.configure_for_cli(["-m", "demo", "-v"], ["python", "-m", "ssd_keras", "demo", "-v"], environ)
    assert environ == {"TF_ENABLE_ONEDNN_OPTS": "0"}  # verbose: log level untouched
    assert record == {"quiet": False, "onednn": "TF_ENABLE_ONEDNN_OPTS=0 (yours)"}
    environ = {}
    record = env.configure_for_cli(["-m", "demo", "--no-onednn"],
                                   ["python", "-m", "ssd_keras", "demo", "--no-onednn"], environ)
    assert "TF_ENABLE_ONEDNN_OPTS" not in environ and "--no-onednn" in record["onednn"]


def test_freeze_imported_objects_takes_them_out_of_the_collectors_reach():
    assert gc.get_freeze_count() == 0
    try:
        frozen = env.freeze_imported_objects()
        assert frozen == gc.get_freeze_count() > 10_000  # TensorFlow and Keras are imported
        # An object made afterwards is still collected as usual.
        cycle = []
        cycle.append(cycle)
        assert gc.is_tracked(cycle)
        del cycle
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
