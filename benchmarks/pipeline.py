"""Samples/s of the v5 training pipeline, and of one v5 training step for comparison.

    .venv/bin/python benchmarks/pipeline.py [--batches 60] [--model-steps 3] [--model-batch 32]

Uses the embedded synthetic dataset (`hms_keras.data.synthetic.embedded_data_dir`, generated and
cached on first use) and its v5 EEG cache (built on first use). Prints:
- pipeline samples/s at worker_count 0 and 2 (batch 32, after one warm-up batch);
- when `hms_keras.models` provides the v5 model: samples/s one JAX training step consumes
  (batch 32 unless --model-batch, after compilation), and the ratio pipeline(worker_count 0) /
  training step, or why the step failed (e.g. out of memory);
- the 1-minute load average before and after, since the machine may be shared.
Prints measurements only; it asserts nothing.
"""

import argparse
import itertools
import os
import time

os.environ["KERAS_BACKEND"] = "jax"

from hms_keras.data.cache import EegCache, build_eeg_cache  # noqa: E402
from hms_keras.data.hms import HmsLayout, read_train_csv  # noqa: E402
from hms_keras.data.labels import vote_targets  # noqa: E402
from hms_keras.data.pipeline import make_v5_train_dataset  # noqa: E402
from hms_keras.data.synthetic import embedded_data_dir  # noqa: E402

BATCH_SIZE = 32


def pipeline_samples_per_s(cache, targets, worker_count: int, batches: int) -> float:
    """Samples/s of the training pipeline over `batches` batches, after one warm-up batch."""
    epochs = batches // max(1, len(targets["eeg_id"].unique()) // BATCH_SIZE) + 2
    dataset, _ = make_v5_train_dataset(
        cache, targets, batch_size=BATCH_SIZE, seed=0, min_weight_schedule=[0.0] * epochs, worker_count=worker_count
    )
    iterator = iter(dataset)
    next(iterator)  # starts workers and threads
    start = time.perf_counter()
    for _ in itertools.islice(iterator, batches):
        pass
    elapsed = time.perf_counter() - start
    iterator.close()  # stops worker processes and frees their shared memory
    return batches * BATCH_SIZE / elapsed


def training_samples_per_s(batch, steps: int) -> float | str:
    """Samples/s of `model.train_on_batch` with the v5 model on one fixed batch (each step
    synchronised by reading its loss), or why it could not be measured."""
    try:
        from hms_keras.models import MODELS
    except ImportError as error:
        return f"hms_keras.models not available ({error})"
    import jax
    import keras

    from hms_keras.losses import VoteWeightedKLDivergence

    inputs, y = batch
    model = MODELS["v5_eeg_dual_effnet1d"]()
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss=VoteWeightedKLDivergence())
    try:
        float(model.train_on_batch(inputs, y))  # compiles
        start = time.perf_counter()
        for _ in range(steps):
            float(model.train_on_batch(inputs, y))
    except jax.errors.JaxRuntimeError as error:
        return f"failed: {str(error).splitlines()[0][-200:]}"
    return steps * len(y) / (time.perf_counter() - start)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=60, help="timed pipeline batches per setting")
    parser.add_argument("--model-steps", type=int, default=3, help="timed training steps")
    parser.add_argument("--model-batch", type=int, default=BATCH_SIZE, help="batch size of the timed training step")
    args = parser.parse_args(argv)

    layout = HmsLayout(embedded_data_dir())
    train_df = read_train_csv(layout.train_csv)
    cache = EegCache(build_eeg_cache(layout, "train", train_df["eeg_id"]))
    targets = vote_targets(train_df)
    print(f"embedded dataset: {train_df['eeg_id'].nunique()} EEGs, {len(train_df)} label rows; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")

    rates = {}
    for worker_count in (0, 2):
        rates[worker_count] = pipeline_samples_per_s(cache, targets, worker_count, args.batches)
        print(f"v5 training pipeline, worker_count={worker_count}: {rates[worker_count]:.0f} samples/s")

    batch = next(iter(make_v5_train_dataset(cache, targets, batch_size=args.model_batch, min_weight_schedule=[0.0])[0]))
    consumed = training_samples_per_s(batch, args.model_steps)
    if isinstance(consumed, str):
        print(f"v5 model training step (batch {args.model_batch}, JAX): {consumed}")
    else:
        print(f"v5 model training step (batch {args.model_batch}, JAX): {consumed:.2f} samples/s; "
              f"pipeline (worker_count=0) / training = {rates[0] / consumed:.0f}x")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
