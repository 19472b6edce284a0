"""Runnable experiments: `recipes.train`, `recipes.predict`; the recipe table is `recipes.registry`.

Importing this package imports nothing else, so an entry point can apply `recipes.cpu_runtime`
before numpy, Keras or JAX start any thread.
"""
