"""CPU runtime settings the entry points apply before JAX starts (measured in benchmarks/model_step.py).

- XLA:CPU's default concurrency-optimised scheduler keeps most activations alive at once, which
  undoes the v5 model's rematerialisation: at batch 32 training peaks at ~19 GB instead of ~4 GB.
  The flag changes scheduling only, never results, and is ignored on GPUs.
- glibc returns XLA's large buffers to the kernel after every run of a compiled step, so the next
  run faults its whole working set in again (v5 at batch 32: a 2.6 GB temporary buffer, ~650k
  page faults a step). Three malloc settings keep them in one reused heap: no `mmap` for large
  blocks (`M_MMAP_MAX=0`), no heap trimming (`M_TRIM_THRESHOLD=-1`; the largest positive value,
  2 GB, still trimmed that buffer), and one arena for all threads (`M_ARENA_MAX=1`: XLA allocates
  on its worker threads, and a secondary arena serves blocks over 64 MB with `mmap` whatever
  `M_MMAP_MAX` says). v5 train step on 2 cores, batch 32: ~36 s with none, ~16 s without heap
  `mmap`s but a 2 GB trim threshold, ~10.5-12.5 s with all three and zero page faults a step.
  The process keeps its peak heap until it exits, which a training or inference run does anyway.
  The same settings serve torch (v5 train step, batch 32: 1.16 EEG/s and 16.4 GB with per-thread
  arenas and a 2 GB trim threshold, 1.77 EEG/s and 15.3 GB with these).
"""

import ctypes
import ctypes.util
import os
import warnings

XLA_CPU_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"

# glibc mallopt(3) parameters.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_NEVER_TRIM = -1  # mallopt(3): "Setting M_TRIM_THRESHOLD to -1 disables trimming completely"


def _thread_count() -> int:
    """Threads of this process (Linux `/proc`; 1 where that is not available)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def keep_heap_allocations() -> bool:
    """Make glibc's malloc serve large blocks from a heap it keeps and reuses, not fresh `mmap`s.

    Returns False (and changes nothing) where the C library is not glibc. Affects only this
    process. Call it while the process has one thread: threads that have already allocated keep
    their own arena (a warning says so).
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None or not hasattr(libc, "gnu_get_libc_version"):
        return False
    threads = _thread_count()
    if threads > 1:
        warnings.warn(
            f"keep_heap_allocations() called with {threads} threads running; call it before importing "
            "numpy, Keras or JAX, or large buffers of those threads keep going back to the kernel",
            stacklevel=2,
        )
    settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _NEVER_TRIM))
    return all(bool(mallopt(param, value)) for param, value in settings)


def configure() -> None:
    """Default the Keras backend to JAX, add the XLA:CPU flag and keep heap allocations.

    Call first, before importing numpy, keras or jax (the allocator settings must precede their
    threads; the XLA flag is read when JAX starts). The flag also reaches subprocesses through
    the environment; the allocator settings are per process.
    """
    os.environ.setdefault("KERAS_BACKEND", "jax")
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_enable_concurrency_optimized_scheduler" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {XLA_CPU_FLAG}".strip()
    keep_heap_allocations()
