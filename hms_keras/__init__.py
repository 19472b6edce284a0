"""hms_keras: Keras 3 multi-backend models for the HMS harmful-brain-activity EEG task.

Importing the package registers every custom serializable object (layers, losses) under the
`hms_keras` package name, so `keras.models.load_model(path)` works after a bare `import hms_keras`.
"""

from hms_keras import layers, losses

__all__ = ["layers", "losses"]
