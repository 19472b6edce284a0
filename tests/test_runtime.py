"""Runtime settings (on import, when too late), the CPU-formulation rules, the persistent compilation
cache and the compilation counter."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import keras
import pytest

from hms_keras import paths, runtime
from hms_keras.compilations import count_xla_compilations

REPO = Path(__file__).resolve().parents[1]


def _python(code, **env):
    """Run `code` in a fresh interpreter (KERAS_BACKEND=jax, no XLA_FLAGS unless given)."""
    environment = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", runtime.SETTINGS_SWITCH)}
    environment.update(KERAS_BACKEND="jax", **env)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=REPO, env=environment
    )


@pytest.mark.parametrize(
    "prelude, env, flag_in_env, xla_warnings",
    [
        ("import hms_keras", {}, True, 0),
        ("import jax, keras\nimport hms_keras", {}, True, 0),  # imported, but no backend yet: still in time
        ("import jax\njax.numpy.ones(1).block_until_ready()\nimport hms_keras", {}, True, 1),  # too late: warns
        ("import hms_keras", {runtime.SETTINGS_SWITCH: "0"}, False, 0),  # settings off
    ],
)
def test_import_adds_the_xla_flag_while_jax_has_no_backend(prelude, env, flag_in_env, xla_warnings):
    code = prelude + (
        "\nimport os\nfrom hms_keras import runtime\n"
        "print(runtime.XLA_CPU_FLAG in os.environ.get('XLA_FLAGS', ''), os.environ['KERAS_BACKEND'])"
    )
    done = _python(code, **env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(flag_in_env), "jax"]
    assert done.stderr.count("hms_keras: JAX started before the XLA:CPU scheduler flag") == xla_warnings, done.stderr


def test_jax_reads_xla_flags_when_its_backend_starts_not_on_import():
    # what the on-import rule rests on: a flag set after `import jax, keras` still reaches XLA
    code = (
        "import os, jax, keras\nfrom hms_keras import runtime\nassert not runtime.jax_backend_started()\n"
        "os.environ['XLA_FLAGS'] = '--xla_hms_keras_probe=1'\njax.devices()"
    )
    done = _python(code, **{runtime.SETTINGS_SWITCH: "0"})
    assert done.returncode != 0
    assert "Unknown flag in XLA_FLAGS: --xla_hms_keras_probe" in done.stderr


def test_configure_after_jax_started_warns_once_in_one_line(monkeypatch):
    jnp.ones(1).block_until_ready()  # this process's JAX backend has started
    assert runtime.jax_backend_started()
    monkeypatch.setattr(runtime, "_warned", set())
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
    assert runtime.add_xla_cpu_flag() is False
    assert runtime.add_xla_cpu_flag() is True  # there already: assumed the user's own choice
    assert os.environ["XLA_FLAGS"].split() == ["--xla_dump_to=/tmp/x", runtime.XLA_CPU_FLAG]
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
    with pytest.warns(UserWarning, match="run `import hms_keras` before any JAX computation") as record:
        assert runtime.configure() is False
        monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
        assert runtime.configure() is False  # too late again, but no second warning
    assert len(record) == 1
    message = str(record[0].message)
    assert "\n" not in message and "XLA:CPU scheduler flag" in message
    assert ("malloc settings" in message) == (platform.libc_ver()[0] == "glibc")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_heap_settings_keep_one_arena_when_hms_keras_is_imported_first():
    # first import: one arena even after JAX started its threads, and no warning
    code = (
        "import hms_keras, jax\njax.numpy.ones(1).block_until_ready()\nfrom hms_keras import runtime\n"
        "print(runtime.keep_heap_allocations(), runtime.malloc_arenas())"
    )
    first = _python(code)
    assert first.returncode == 0, first.stderr
    assert first.stdout.split() == ["True", "1"]
    assert "UserWarning" not in first.stderr
    # settings off until JAX's threads have their own arenas: too late, and configure() says so, once
    late = _python(code + "\nprint(runtime.configure())\nruntime.configure()", **{runtime.SETTINGS_SWITCH: "0"})
    assert late.returncode == 0, late.stderr
    applied, arenas, bound = late.stdout.split()
    assert applied == "True" and int(arenas) > 1 and bound == "False"
    assert late.stderr.count("UserWarning: hms_keras: JAX started before") == 1, late.stderr
    assert "malloc settings" in late.stderr


def test_cpu_formulations_follow_backend_and_device(monkeypatch):
    assert keras.backend.backend() == "jax" and jax.default_backend() == "cpu"
    assert all(runtime.uses_cpu_formulation(name) for name in runtime.CPU_FORMULATIONS)
    with jax.default_device("gpu"):  # a scope's device decides (nothing runs in it)
        assert not any(runtime.uses_cpu_formulation(name) for name in runtime.CPU_FORMULATIONS)
    monkeypatch.setattr(runtime, "_device_platform", lambda backend: "cpu")
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    assert not any(runtime.uses_cpu_formulation(name) for name in runtime.CPU_FORMULATIONS)
    monkeypatch.setattr(keras.backend, "backend", lambda: "tensorflow")
    chosen = {name for name in runtime.CPU_FORMULATIONS if runtime.uses_cpu_formulation(name)}
    assert chosen == {"pointwise"}
    monkeypatch.setattr(runtime, "_device_platform", lambda backend: "gpu")
    assert not runtime.uses_cpu_formulation("pointwise")


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
