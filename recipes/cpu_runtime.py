"""XLA:CPU settings the entry points apply before JAX starts (measured in benchmarks/model_step.py).

XLA:CPU's default concurrency-optimised scheduler keeps most activations alive at once, which
undoes the v5 model's rematerialisation: at batch 32 training peaks at ~19 GB instead of ~4 GB.
The flag changes scheduling only, never results, and is ignored on GPUs.
"""

import os

XLA_CPU_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"


def configure() -> None:
    """Default the Keras backend to JAX and add the XLA:CPU flag; call before importing keras."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_enable_concurrency_optimized_scheduler" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {XLA_CPU_FLAG}".strip()
