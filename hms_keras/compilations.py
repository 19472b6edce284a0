"""Count XLA compilations per jitted function, to verify that training compiles its step once."""

import collections
import contextlib

import keras

# JAX records this event (with the jitted function's name) each time it builds an executable,
# whether XLA compiles it or the persistent compilation cache supplies it.
_BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def count_xla_compilations():
    """Yield a `collections.Counter` of function name -> executables built inside the block.

    JAX backend only (Keras' train step is named `train_step`); on other backends the counter
    stays empty. A Keras `fit` whose inputs keep static shapes builds `train_step` exactly once,
    however many epochs it runs; a count above one means shapes or Python constants changed
    between steps and the step was retraced.
    """
    counts = collections.Counter()
    if keras.backend.backend() != "jax":
        yield counts
        return
    import jax

    def listener(event, duration_secs, fun_name="", **kwargs):
        if event == _BACKEND_COMPILE_EVENT:
            counts[fun_name.removeprefix("jit(").removesuffix(")")] += 1  # reported as "jit(name)"

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield counts
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
