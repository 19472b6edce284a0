"""CPU runtime settings the entry points apply before JAX starts (measured in benchmarks/model_step.py).

- XLA:CPU's default concurrency-optimised scheduler keeps most activations alive at once, which
  undoes the v5 model's rematerialisation: at batch 32 training peaks at ~19 GB instead of ~4 GB.
  The flag changes scheduling only, never results, and is ignored on GPUs.
- glibc serves every large allocation (XLA's activation buffers are tens to hundreds of MB) with a
  fresh `mmap` and returns it after use, so each training step faults in its working set again
  (millions of page faults). Keeping large blocks in the reused heap halves the v5 train step
  on 2 cores (batch 32: ~36 s -> ~17 s) and the first (compile) step (~80 s -> ~45 s). The
  process then keeps its peak heap until it exits, which a training or inference run does anyway.
"""

import ctypes
import ctypes.util
import os

XLA_CPU_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"

# glibc mallopt(3) parameters.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_TRIM_THRESHOLD_BYTES = 2**31 - 1  # the largest value mallopt accepts: never trim the heap


def keep_heap_allocations() -> bool:
    """Make glibc's malloc serve large blocks from a heap it keeps and reuses, not fresh `mmap`s.

    Returns False (and changes nothing) where the C library is not glibc. Safe to call at any
    time; affects only this process.
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None or not hasattr(libc, "gnu_get_libc_version"):
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES))


def configure() -> None:
    """Default the Keras backend to JAX, add the XLA:CPU flag and keep heap allocations.

    Call before importing keras or jax (the XLA flag is read when JAX starts). The flag also
    reaches subprocesses through the environment; the allocator setting is per process.
    """
    os.environ.setdefault("KERAS_BACKEND", "jax")
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_enable_concurrency_optimized_scheduler" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {XLA_CPU_FLAG}".strip()
    keep_heap_allocations()
