"""Shared test set-up: the JAX backend unless the caller chose one (with `hms_keras.runtime`'s
settings, applied on import), a private cache folder, and the `slow` marker (skipped unless --runslow)."""

import os

import pytest

import hms_keras  # noqa: F401  JAX by default, and the XLA:CPU scheduler flag (also for subprocesses)


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture(scope="session", autouse=True)
def private_cache_root(tmp_path_factory):
    """Keep generated datasets and preprocessing caches out of the user's ~/.cache."""
    root = tmp_path_factory.mktemp("hms_keras_cache")
    previous = os.environ.get("HMS_KERAS_CACHE")
    os.environ["HMS_KERAS_CACHE"] = str(root)
    yield root
    if previous is None:
        os.environ.pop("HMS_KERAS_CACHE", None)
    else:
        os.environ["HMS_KERAS_CACHE"] = previous
