"""Process set-up for CPU runs, the persistent compilation cache and the compilation counter."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from hms_keras import paths
from hms_keras.compilations import count_xla_compilations
from recipes import cpu_runtime


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_heap_allocations_are_kept_on_glibc_when_set_first():
    # a fresh interpreter has one thread: no warning; this test process runs JAX's threads: a warning
    script = "from recipes import cpu_runtime; print(cpu_runtime.keep_heap_allocations())"
    first = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "True"
    with pytest.warns(UserWarning, match="threads running"):
        assert cpu_runtime.keep_heap_allocations() is True


def test_configure_adds_the_xla_flag_once(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
    with pytest.warns(UserWarning, match="threads running"):  # this process already runs JAX
        cpu_runtime.configure()
        cpu_runtime.configure()
    flags = os.environ["XLA_FLAGS"].split()
    assert flags == ["--xla_dump_to=/tmp/x", cpu_runtime.XLA_CPU_FLAG]


def test_compilations_are_counted_per_function_and_shape():
    @jax.jit
    def double_it(x):
        return 2 * x

    with count_xla_compilations() as counts:
        double_it(jnp.ones(3))
        double_it(jnp.zeros(3))  # same shape: reuses the executable
        double_it(jnp.ones(4))  # new shape: a second build
    assert counts["double_it"] == 2


def test_persistent_compilation_cache_goes_under_the_cache_root():
    previous = jax.config.jax_compilation_cache_dir
    try:
        jax.config.update("jax_compilation_cache_dir", None)
        paths.use_persistent_compilation_cache()
        assert jax.config.jax_compilation_cache_dir == str(paths.cache_root() / "xla")
        jax.config.update("jax_compilation_cache_dir", "/somewhere/else")
        paths.use_persistent_compilation_cache()  # a user's choice is kept
        assert jax.config.jax_compilation_cache_dir == "/somewhere/else"
    finally:
        jax.config.update("jax_compilation_cache_dir", previous)
