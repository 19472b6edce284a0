"""Runnable experiments: `recipes.train`, `recipes.predict`; the recipe table is `recipes.registry`.

Importing this package imports nothing else, so an entry point's first import, `hms_keras`, applies
`hms_keras.runtime`'s settings before numpy, Keras or JAX start any thread.
"""
