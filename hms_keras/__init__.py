"""hms_keras: Keras 3 multi-backend models for the HMS harmful-brain-activity EEG task.

Importing the package registers every custom serializable object (layers, losses) under the
`hms_keras` package name, so `keras.models.load_model(path)` works after a bare `import hms_keras`.
It imports Keras; when `KERAS_BACKEND` is unset (and Keras not yet imported), the backend is JAX.
"""

import os

# JAX is the project's backend; only a default, applied before this package imports Keras.
os.environ.setdefault("KERAS_BACKEND", "jax")

from hms_keras import layers, losses  # noqa: E402

__all__ = ["layers", "losses"]
