"""hms_keras: Keras 3 multi-backend models for the HMS harmful-brain-activity EEG task.

Importing the package registers every custom serializable object (layers, losses) under the
`hms_keras` package name, so `keras.models.load_model(path)` works after a bare `import hms_keras`.
First, before it imports Keras, it defaults the Keras backend to JAX (when `KERAS_BACKEND` is unset
and Keras not yet imported) and applies the CPU runtime settings of `hms_keras.runtime`: make it the
first import of a script or notebook.
"""

from hms_keras import runtime  # the standard library only

runtime.apply_on_import()

from hms_keras import layers, losses  # noqa: E402

__all__ = ["layers", "losses", "runtime"]
