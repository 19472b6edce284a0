"""The devices one run trains on: `train.devices` as a Keras data-parallel distribution.

With `train.devices` above 1 (or "all"), `hms_keras.training` builds, compiles and fits the model
inside `keras.distribution.DataParallel(devices=...)`: the variables are replicated on every
device, each global batch of `train.batch_size` samples is split along its first axis into equal
per-device shards, and the gradients are summed across devices inside the compiled step (XLA
inserts the all-reduce). Batch normalisation sees the global batch: the step computes what the
one-device step computes, in another summation order (`tests/test_devices.py` checks loss and
gradients on 2 CPU devices).

Keras' distribution API runs on JAX only: its TensorFlow implementation is a prototype marked
"do not use" and torch has none, so other backends get a RecipeError.
"""

import contextlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import keras

from hms_keras.recipe import ALL_DEVICES, RecipeError


def data_parallel(devices: int | str, batch_size: int, recipe_name: str) -> keras.distribution.DataParallel | None:
    """The distribution for `train.devices` = `devices` (a count, or "all" local devices), or None
    for one device (no distribution).

    Raises RecipeError naming `recipe_name` when the backend is not JAX, when more devices are
    asked for than exist, or when `batch_size` (the global batch) does not split evenly across them.
    """
    if devices == 1:
        return None
    problem = f"recipe {recipe_name!r}: train.devices={devices!r}"
    backend = keras.backend.backend()
    if backend != "jax":
        raise RecipeError(
            f"{problem} needs KERAS_BACKEND=jax: Keras distributes training on JAX only "
            f"(its TensorFlow distribution is a prototype, torch has none), and the backend is {backend}"
        )
    available = keras.distribution.list_devices()  # GPUs (or TPUs) when there are any, else CPUs
    if devices != ALL_DEVICES and devices > len(available):
        raise RecipeError(f"{problem}, but this machine has {len(available)} device(s): {', '.join(available)}")
    chosen = available if devices == ALL_DEVICES else available[:devices]
    if batch_size % len(chosen):
        raise RecipeError(
            f"{problem}: train.batch_size={batch_size} (the global batch) does not split evenly across "
            f"{len(chosen)} devices; use a multiple of {len(chosen)}"
        )
    return keras.distribution.DataParallel(devices=chosen)


def distributed(distribution: keras.distribution.DataParallel | None):
    """`distribution.scope()`, or a block that changes nothing when `distribution` is None."""
    return distribution.scope() if distribution is not None else contextlib.nullcontext()


@contextlib.contextmanager
def without_distribution() -> Iterator[None]:
    """Run the block with no Keras distribution set, e.g. `model.predict` on an evaluation set
    whose last batch does not split across the devices (the replicated variables work there)."""
    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(previous)


def device_note() -> str:
    """One line naming the Keras backend and the devices it computes on, for benchmark output:
    e.g. "jax 0.10.2 on 1 x NVIDIA H200 (gpu)" or "jax 0.10.2 on 1 x cpu (cpu: <CPU model>,
    bfloat16 instructions: avx512_bf16)"."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        platform, version = jax.default_backend(), jax.__version__
        kinds = Counter(device.device_kind for device in jax.devices())
    elif backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        platform, version = ("gpu" if gpus else "cpu"), tf.__version__
        kinds = Counter(device.name for device in gpus) if gpus else Counter({"cpu": 1})
    else:
        import torch

        cuda = torch.cuda.is_available()
        platform, version = ("gpu" if cuda else "cpu"), torch.__version__
        names = [torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())] if cuda else ["cpu"]
        kinds = Counter(names)
    devices = ", ".join(f"{count} x {kind}" for kind, count in kinds.items())
    return f"{backend} {version} on {devices} ({platform}{': ' + _cpu_description() if platform == 'cpu' else ''})"


def _cpu_description() -> str:
    """The CPU's model name and its bfloat16 instruction sets, from /proc/cpuinfo (Linux)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "unknown CPU"
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    bfloat16 = [flag for flag in fields.get("flags", "").split() if flag in ("avx512_bf16", "amx_bf16")]
    return f"{fields.get('model name', 'unknown CPU')}, bfloat16 instructions: {', '.join(bfloat16) or 'none'}"
