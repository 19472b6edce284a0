"""Process settings for CPU runs, applied on `import hms_keras`, and which layers run their CPU formulations.

Two process-wide settings, measured with `benchmarks/model_step.py` (v5 model, batch 32, 2 CPU cores):

- XLA:CPU's default concurrency-optimised scheduler keeps most activations alive at once, which
  undoes the v5 model's rematerialisation: training peaks at ~19 GB instead of ~4 GB. The flag
  `XLA_CPU_FLAG` changes scheduling only, never results, and is ignored on GPUs. JAX reads
  `XLA_FLAGS` once, when it creates its first backend (the first `jax.devices()` or computation;
  importing jax or keras does not), so the flag binds only if it is set before that.
- glibc returns XLA's large buffers to the kernel after every run of a compiled step, so the next
  run faults its whole working set in again (a 2.6 GB temporary buffer, ~650k page faults a step).
  Three malloc settings keep them in one reused heap: no `mmap` for large blocks (`M_MMAP_MAX=0`),
  no heap trimming (`M_TRIM_THRESHOLD=-1`; the largest positive value, 2 GB, still trimmed that
  buffer), and one arena for all threads (`M_ARENA_MAX=1`: XLA allocates on its worker threads, and
  a secondary arena serves blocks over 64 MB with `mmap` whatever `M_MMAP_MAX` says). Train step:
  ~36 s with none, ~16 s without heap `mmap`s but a 2 GB trim threshold, ~10.5-12.5 s with all
  three and zero page faults a step. The first two bind every thread at once; the arena limit only
  stops new arenas: threads that allocated before it keep theirs. XLA's worker threads start when
  JAX creates its backend; set after that, the settings leave ~295k page faults a step (batch 2,
  `benchmarks/notebook_path.py --orders jax_started`), set before it, none (also with the second
  arena pandas' import leaves). The process keeps its
  peak heap until it exits. torch benefits too (train step: 1.16 EEG/s and 16.4 GB with per-thread
  arenas and a 2 GB trim threshold, 1.77 EEG/s and 15.3 GB with these).

So both settings bind if they come before JAX's first backend, and `import hms_keras` applies them
(`configure()`) before it imports numpy, Keras or JAX: whether it is a notebook's first import or
follows `import numpy, pandas, keras`, v5 at batch 32 then trains with ~5.5-6.4 GB peak RSS and
no page faults a step (`benchmarks/notebook_path.py`; without the settings it passed 19 GB). After a
JAX computation it is too late for both: `configure()` says so in one warning, once.
`HMS_KERAS_RUNTIME_SETTINGS=0` in the environment turns the settings off (then `import hms_keras`
only defaults the Keras backend to JAX).

`uses_cpu_formulation(name)` is the one place that decides whether a layer runs the formulation it
was tuned with on CPU or Keras' own implementation (e.g. on a GPU, where XLA's native kernels are
the ones to beat); `CPU_FORMULATIONS` lists each rule with its measured reason.
"""

import ctypes
import ctypes.util
import os
import sys
import warnings

XLA_CPU_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"
SETTINGS_SWITCH = "HMS_KERAS_RUNTIME_SETTINGS"  # "0" in the environment: `import hms_keras` changes no setting

# glibc mallopt(3) parameters.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_NEVER_TRIM = -1  # mallopt(3): "Setting M_TRIM_THRESHOLD to -1 disables trimming completely"

# Layer formulation -> the Keras backends on which it replaces Keras' implementation when the
# device is a CPU. Each was measured on CPU only (figures in the layer's docstring); on a GPU the
# backend's native kernels are the ones to beat, so the layers use Keras' implementation there.
CPU_FORMULATIONS = {
    # ShiftedDepthwiseConv2D: XLA:CPU lowers grouped convolutions to a slow generic loop; TensorFlow
    # and torch have faster native depthwise kernels (oneDNN).
    "depthwise": ("jax",),
    # SlicedMaxPooling2D: the `reduce_window` gradient (select-and-scatter) is a slow loop on XLA:CPU.
    "max_pool": ("jax",),
    # PointwiseDense: no transposed copy of the output gradient before the weight-gradient matmul.
    # TensorFlow (README's figure measured with it) too; not torch: there the flattened matmul ran v5
    # training at batch 32 out of memory (killed at 24 GB; 15.3 GB peak RSS as `Dense`).
    "pointwise": ("jax", "tensorflow"),
    # elu: XLA:CPU evaluates `exp` about 2x faster than `expm1`.
    "elu": ("jax",),
    # Rematerialized: a `jax.checkpoint` policy that keeps matmul and reduction outputs.
    "remat_policy": ("jax",),
}

_warned = set()  # the warnings this process has shown, each shown once


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, stacklevel=3)


def jax_backend_started() -> bool:
    """Whether JAX has created a backend in this process, i.e. has already read `XLA_FLAGS`.

    False while jax is not imported. Otherwise asks `jax._src.xla_bridge.backends_are_initialized`
    (jax has no public equivalent); where that is missing, assumes it has (True).
    """
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):
        return True


def add_xla_cpu_flag() -> bool:
    """Add `XLA_CPU_FLAG` to `XLA_FLAGS` unless the option is there already (subprocesses inherit it).

    Returns whether the option binds this process's JAX: False when JAX had created its backend
    before this call added it.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if XLA_CPU_FLAG.split("=")[0] in flags:
        return True  # the user's choice, or an earlier call: assumed there since before JAX started
    os.environ["XLA_FLAGS"] = f"{flags} {XLA_CPU_FLAG}".strip()
    return not jax_backend_started()


def _libc():
    """glibc as a `ctypes.CDLL`; None where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name)
    return libc if hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt") else None


def malloc_arenas() -> int | None:
    """How many arenas glibc's malloc holds (from malloc_info(3)'s XML); None where that fails."""
    libc = _libc()
    if libc is None:
        return None
    try:
        libc.open_memstream.restype = ctypes.c_void_p
        buffer, size = ctypes.c_void_p(), ctypes.c_size_t()
        stream = libc.open_memstream(ctypes.byref(buffer), ctypes.byref(size))
        if not stream:
            return None
        libc.malloc_info(0, ctypes.c_void_p(stream))
        libc.fclose(ctypes.c_void_p(stream))
        xml = ctypes.string_at(buffer.value, size.value).decode()
        libc.free(buffer)
    except (AttributeError, OSError, UnicodeDecodeError):
        return None
    return xml.count("<heap nr=")


def keep_heap_allocations() -> bool:
    """Make glibc's malloc serve large blocks from a heap it keeps and reuses, not fresh `mmap`s.

    Returns False (and changes nothing) where the C library is not glibc. Affects only this
    process. Call it before JAX creates its backend: XLA's worker threads that allocated before
    the call keep their own arenas (`configure()` warns when it is too late).
    """
    libc = _libc()
    if libc is None:
        return False
    settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _NEVER_TRIM))
    return all(bool(libc.mallopt(param, value)) for param, value in settings)


def configure() -> bool:
    """Apply both settings (`add_xla_cpu_flag`, `keep_heap_allocations`); `import hms_keras` calls it.

    Returns whether both bind this process, i.e. JAX has not created its backend yet. When it has,
    one warning (one line, once a process) names what came too late and what to do. Repeated calls
    only re-apply the same values.
    """
    started = jax_backend_started()
    flag = add_xla_cpu_flag()
    heap = keep_heap_allocations()
    late = []
    if not flag:
        import jax

        if jax.default_backend() == "cpu":
            late.append("the XLA:CPU scheduler flag (v5 training may peak at ~19 GB instead of ~4 GB)")
    if heap and started:
        late.append("the malloc settings (XLA's threads keep returning large buffers to the kernel: slower steps)")
    if late:
        _warn_once(
            "late",
            f"hms_keras: JAX started before {' and '.join(late)}; "
            "restart and run `import hms_keras` before any JAX computation",
        )
    return flag and heap and not started


def apply_on_import() -> None:
    """What `import hms_keras` does first: default the Keras backend to JAX, then `configure()`
    unless `HMS_KERAS_RUNTIME_SETTINGS=0`. Imports nothing beyond the standard library."""
    os.environ.setdefault("KERAS_BACKEND", "jax")  # only a default, applied before hms_keras imports Keras
    if os.environ.get(SETTINGS_SWITCH, "1") != "0":
        configure()


def _device_platform(backend: str) -> str:
    """The platform ("cpu", "gpu", "tpu") the Keras backend computes on by default.

    JAX: the platform of `jax.config.jax_default_device` (`jax.default_device(...)` scopes and
    `keras.device(...)` set it) or of JAX's default backend. TensorFlow: "gpu" when it sees a GPU.
    """
    if backend == "jax":
        import jax

        device = jax.config.jax_default_device
        if device is None:
            return jax.default_backend()
        return device if isinstance(device, str) else device.platform
    if backend == "tensorflow":
        import tensorflow as tf

        return "gpu" if tf.config.list_logical_devices("GPU") else "cpu"
    return "unknown"


def uses_cpu_formulation(name: str) -> bool:
    """Whether the layer formulation `name` (a key of `CPU_FORMULATIONS`) replaces Keras' own
    implementation: the Keras backend is one of its backends and that backend computes on a CPU."""
    import keras

    backend = keras.backend.backend()
    return backend in CPU_FORMULATIONS[name] and _device_platform(backend) == "cpu"
