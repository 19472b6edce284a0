"""Grain input pipelines: v5 raw-EEG training and evaluation, and the spectrogram baseline.

v5 training (`make_v5_train_dataset`), one chained Grain expression:
  EEG positions -> per-epoch shuffle, first steps * batch EEGs -> repeat(epochs)
  -> draw one label row per EEG (random) -> read its 50 s window from the cache
  -> augment the monopolar window (random) -> montage, high-pass, clip, crop
  -> batch(drop_remainder) -> cutmix (random, per batch) -> min-weight threshold of the epoch.
Every random step draws from the generator Grain derives from (seed, step, index), so any
item or batch reproduces from (seed, epoch, index), with or without worker processes.

Batches are `(inputs, y)`: inputs {"eeg": (B, 512, 18) float32 mV, "mask": (B, 512, 18)
float32} (time, bipolar channels in constants.BIPOLAR_PAIRS order); y (B, 2, 8) float32 in the
`target_layout` layout. Spectrogram batches: (B, 400, 300, 1) float32 images and y (B, 6).

Evaluation datasets are not shuffled or augmented and keep the last, partial batch: sample i
of the concatenated `model.predict` output belongs to row i of the rows table they return.
"""

from collections.abc import Sequence

import grain
import numpy as np
import pandas as pd
from absl import flags
from tqdm import tqdm

from hms_keras import constants
from hms_keras.data.cache import EegCache
from hms_keras.data.cutmix import CutMix
from hms_keras.data.hms import HmsDataError, HmsLayout, check_spectrogram_columns, read_spectrogram
from hms_keras.data.labels import TARGET_COLUMNS, first_row_per_spectrogram, v5_targets, vote_probabilities
from hms_keras.data.preprocess import normalize_spectrogram, shift_spectrogram_window, spectrogram_window
from hms_keras.data.transforms import AugmentMonopolar, V5FrontEnd, check_crop_shift, pad_window, window_inputs
from hms_keras.target_layout import with_threshold

# Background threads per process that prepare batches ahead of the consumer.
READ_THREADS = 2
PREFETCH_BATCHES = 4


# --- pure functions ------------------------------------------------------------------------


def window_start_frames(rows: pd.DataFrame) -> np.ndarray:
    """(rows,) int64 first 40 Hz frame of each row's 50 s window: int(offset_s * 40), or 0 when
    the table has no `eeg_label_offset_seconds` column (test EEGs)."""
    if "eeg_label_offset_seconds" not in rows:
        return np.zeros(len(rows), np.int64)
    offsets = rows["eeg_label_offset_seconds"].to_numpy(np.float64)  # (rows,) s
    return (offsets * constants.SAMPLING_RATE_HZ).astype(np.int64)


def rows_by_eeg(eeg_ids: np.ndarray) -> list[np.ndarray]:
    """Row positions of each distinct eeg_id, EEGs in first-appearance order."""
    codes, _ = pd.factorize(eeg_ids)
    order = np.argsort(codes, kind="stable")  # (rows,)
    return np.split(order, np.flatnonzero(np.diff(codes[order])) + 1)


def draw_row(rows: np.ndarray, rng: np.random.Generator) -> int:
    """One row position drawn uniformly from `rows`."""
    return int(rows[rng.integers(len(rows))])


def spectrogram_offsets(rows: pd.DataFrame) -> np.ndarray:
    """(rows,) float64 `spectrogram_label_offset_seconds`, or 0 when the table has none (test)."""
    if "spectrogram_label_offset_seconds" not in rows:
        return np.zeros(len(rows))
    return rows["spectrogram_label_offset_seconds"].to_numpy(np.float64)


# --- Grain transforms ----------------------------------------------------------------------


class DrawLabelRow(grain.transforms.RandomMap):
    """EEG position -> the position of one of its label rows, drawn at random."""

    def __init__(self, eeg_rows: list[np.ndarray]):
        self.eeg_rows = eeg_rows

    def random_map(self, element: int, rng: np.random.Generator) -> int:
        return draw_row(self.eeg_rows[element], rng)


class ReadV5Window(grain.transforms.Map):
    """Row position -> record {"signal": (2048, 19) float32 mV, "cqf": (2048, 19) float32,
    "y": (2, 8) float32}; the row's 50 s window read from the cache and right-padded, ready for
    the augmentations. Without targets (y=None) the record has no "y"."""

    def __init__(self, cache: EegCache, eeg_ids: np.ndarray, start_frames: np.ndarray, y: np.ndarray | None):
        self.cache = cache
        self.eeg_ids = eeg_ids
        self.start_frames = start_frames
        self.y = y

    def window(self, element: int) -> np.ndarray:
        """(2000, 2, 19) float32: the row's 50 s window as the cache hands it out."""
        return self.cache.window(self.eeg_ids[element], self.start_frames[element], constants.WINDOW_FRAMES)

    def map(self, element: int) -> dict[str, np.ndarray]:
        signal, cqf = pad_window(self.window(element))
        record = {"signal": signal, "cqf": cqf}
        if self.y is not None:
            record["y"] = self.y[element]
        return record


class ReadV5Inputs(ReadV5Window):
    """Row position -> (inputs, y (2, 8) float32), or the inputs dict alone when y is None: the
    row's window through `transforms.window_inputs` (no augmentation; the crop moved by
    `crop_shift` frames for a test-time augmentation view), as `tasks.v5_eeg.eeg_inputs` turns a
    recording into model inputs."""

    def __init__(self, cache, eeg_ids, start_frames, y, crop_shift: int = 0):
        super().__init__(cache, eeg_ids, start_frames, y)
        self.crop_shift = crop_shift

    def map(self, element: int) -> tuple[dict[str, np.ndarray], np.ndarray] | dict[str, np.ndarray]:
        inputs = window_inputs(self.window(element), self.crop_shift)  # {"eeg", "mask"}: (512, 18) each
        return inputs if self.y is None else (inputs, self.y[element])


class SetMinWeightThreshold(grain.transforms.MapWithIndex):
    """Batch k -> the batch with y's threshold column set to schedule[k // steps_per_epoch]."""

    def __init__(self, schedule: Sequence[float], steps_per_epoch: int):
        self.schedule = tuple(float(value) for value in schedule)
        self.steps_per_epoch = steps_per_epoch

    def map_with_index(self, index: int, element: tuple) -> tuple:
        inputs, y = element
        return inputs, with_threshold(y, self.schedule[index // self.steps_per_epoch])


class ReadSpectrogramWindow(grain.transforms.Map):
    """Row position -> (image (400, 300, 1) float32, y (6,) float32), or the image alone when
    y is None. Reads the row's parquet file on each call, so memory stays bounded. time_shift:
    rows (2 s) the window is moved by for a test-time augmentation view
    (`preprocess.shift_spectrogram_window`; 0 in training)."""

    def __init__(
        self, layout: HmsLayout, split: str, rows: pd.DataFrame, y: np.ndarray | None, time_shift: int = 0
    ):
        self.layout = layout
        self.split = split
        self.spectrogram_ids = rows["spectrogram_id"].to_numpy(np.int64)
        self.offsets = spectrogram_offsets(rows)
        self.y = y
        self.time_shift = time_shift

    def map(self, element: int) -> tuple[np.ndarray, np.ndarray] | np.ndarray:
        _, values = read_spectrogram(self.layout.spectrogram_path(self.split, self.spectrogram_ids[element]))
        window = shift_spectrogram_window(spectrogram_window(values, self.offsets[element]), self.time_shift)
        image = normalize_spectrogram(window)[..., None]  # (400, 300, 1)
        return image if self.y is None else (image, self.y[element])


# --- datasets ------------------------------------------------------------------------------


def _iterate(dataset: grain.MapDataset, worker_count: int) -> grain.IterDataset:
    """Background-prefetching iterable of `dataset`, in `worker_count` processes when > 0.

    Worker processes are spawned: the caller's entry point needs an `if __name__ ==
    "__main__"` guard. absl flags are marked parsed first (jax defines absl flags, and Grain's
    workers fail reading unparsed ones).
    """
    iterable = dataset.to_iter_dataset(
        grain.ReadOptions(num_threads=READ_THREADS, prefetch_buffer_size=PREFETCH_BATCHES)
    )
    if worker_count == 0:
        return iterable
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    return iterable.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))


def epoch_order(num_items: int, batch_size: int, seed: int, num_epochs: int) -> tuple[grain.MapDataset, int]:
    """Item positions 0..num_items-1, freshly shuffled each epoch and cut to whole batches
    (drop_last per epoch), repeated `num_epochs` times. Returns (dataset, steps_per_epoch)."""
    steps_per_epoch = num_items // batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"{num_items} training items are fewer than one batch of {batch_size}")
    order = grain.MapDataset.range(num_items).seed(seed).shuffle()
    return order[: steps_per_epoch * batch_size].repeat(num_epochs), steps_per_epoch


def v5_row_order(eeg_ids: np.ndarray, batch_size: int, seed: int, num_epochs: int) -> tuple[grain.MapDataset, int]:
    """Label-row positions the v5 training pipeline reads: each epoch visits the distinct EEGs
    of `eeg_ids` (rows,) once, in a new order cut to whole batches, each with one of its rows
    drawn at random. Returns (dataset of row positions, steps_per_epoch)."""
    eeg_rows = rows_by_eeg(eeg_ids)
    order, steps_per_epoch = epoch_order(len(eeg_rows), batch_size, seed, num_epochs)
    return order.random_map(DrawLabelRow(eeg_rows)), steps_per_epoch


def _check_windows(cache: EegCache, eeg_ids: np.ndarray, start_frames: np.ndarray) -> None:
    """Fail before training starts, not inside a worker: the cache raises HmsDataError (saying
    how to add it) for an eeg_id it lacks; a window starting past its recording's end raises
    HmsDataError naming the eeg_id and the cache."""
    unique_ids = tqdm(pd.unique(eeg_ids), desc="checking the EEG cache", unit="eeg", leave=False)
    frames = {eeg_id: cache.num_frames(eeg_id) for eeg_id in unique_ids}
    available = np.array([frames[eeg_id] for eeg_id in eeg_ids])  # (rows,)
    outside = np.flatnonzero(start_frames >= available)
    if len(outside):
        row = outside[0]
        raise HmsDataError(
            f"{cache!r}: eeg_id {eeg_ids[row]} has {available[row]} frames, but a label window starts at frame "
            f"{start_frames[row]} ({len(outside)} row(s) outside their recording)"
        )


def make_v5_train_dataset(
    cache: EegCache,
    targets: pd.DataFrame,
    *,
    batch_size: int = 32,
    seed: int = 0,
    min_weight_schedule: Sequence[float],
    worker_count: int = 0,
    first_epoch: int = 0,
) -> tuple[grain.IterDataset, int]:
    """The v5 training pipeline (v5 reference §1.4-1.5, §2, §5), `len(min_weight_schedule)` epochs.

    cache: the EEG cache of the training EEGs. targets: `labels.vote_targets` rows of the
    training EEGs (any index). Each epoch visits every EEG once in a new order, with one of its
    label rows drawn at random, and drops the last partial batch. seed: the one seed the
    shuffle, row draws, augmentations and cutmix derive theirs from. min_weight_schedule: one
    threshold per epoch, written into y[..., 7] after cutmix (the loss ignores samples whose
    head-0 weight is below it). Raises HmsDataError when an eeg_id is not in the cache or a
    window starts outside its recording. first_epoch: start at that epoch's first batch (a
    resumed run): the batches are those an uninterrupted run sees from there, because every
    random draw derives from the batch's position in the whole run.
    Returns (dataset of `(inputs, y)` batches, steps_per_epoch) for
    `model.fit(dataset, epochs=len(min_weight_schedule), initial_epoch=first_epoch,
    steps_per_epoch=steps_per_epoch)`.
    """
    eeg_ids = targets["eeg_id"].to_numpy(np.int64)  # (rows,)
    start_frames = window_start_frames(targets)  # (rows,)
    _check_windows(cache, eeg_ids, start_frames)
    rows, steps_per_epoch = v5_row_order(eeg_ids, batch_size, seed, len(min_weight_schedule))
    dataset = (
        rows.map(ReadV5Window(cache, eeg_ids, start_frames, v5_targets(targets)))
        .random_map(AugmentMonopolar())
        .map(V5FrontEnd())
        .batch(batch_size, drop_remainder=True)
        .random_map(CutMix())
        .map_with_index(SetMinWeightThreshold(min_weight_schedule, steps_per_epoch))
    )
    return _iterate(dataset[first_epoch * steps_per_epoch :], worker_count), steps_per_epoch


def make_v5_eval_dataset(
    cache: EegCache, rows: pd.DataFrame, *, batch_size: int = 32, worker_count: int = 0, crop_shift: int = 0
) -> tuple[grain.IterDataset, pd.DataFrame]:
    """Deterministic v5 evaluation / inference pipeline: one sample per row, no augmentation.

    rows: label rows to score, e.g. `labels.sample_eval_rows(targets)` (keeps `eeg_id` and
    `row` for pooling per EEG), or test.csv rows (no offset column: window from frame 0).
    When rows carry the `labels.vote_targets` columns the batches are `(inputs, y)` with
    threshold 0, else the inputs dict alone. The last batch may be smaller than batch_size.
    crop_shift: frames the 512-frame crop is moved by (a test-time augmentation view,
    `transforms.CROP_SHIFT_RANGE`; 0 = the central crop the model was trained on).
    Returns (dataset, rows reindexed 0..n-1): sample i of the predictions is row i.
    """
    check_crop_shift(crop_shift)
    rows = rows.reset_index(drop=True)
    eeg_ids = rows["eeg_id"].to_numpy(np.int64)  # (rows,)
    start_frames = window_start_frames(rows)  # (rows,)
    _check_windows(cache, eeg_ids, start_frames)
    y = v5_targets(rows) if set(TARGET_COLUMNS) <= set(rows.columns) else None
    dataset = (
        grain.MapDataset.range(len(rows))
        .map(ReadV5Inputs(cache, eeg_ids, start_frames, y, crop_shift))
        .batch(batch_size, drop_remainder=False)
    )
    return _iterate(dataset, worker_count), rows


def _check_spectrogram_files(layout: HmsLayout, split: str, rows: pd.DataFrame) -> None:
    """Raise HmsDataError naming the first spectrogram file that does not exist or whose columns
    are wrong (footers only), before any model is built."""
    for spectrogram_id in tqdm(pd.unique(rows["spectrogram_id"]), desc="checking spectrograms", leave=False):
        path = layout.spectrogram_path(split, spectrogram_id)
        if not path.is_file():
            raise HmsDataError(f"{path}: spectrogram file not found for spectrogram_id {spectrogram_id}")
        check_spectrogram_columns(path)


def make_spectrogram_train_dataset(
    layout: HmsLayout,
    train_rows: pd.DataFrame,
    *,
    batch_size: int = 32,
    seed: int = 1086,
    num_epochs: int,
    worker_count: int = 0,
    first_epoch: int = 0,
) -> tuple[grain.IterDataset, int]:
    """Spectrogram-baseline training pipeline (docs/spectrogram_baseline.md), `num_epochs` epochs.

    train_rows: train.csv rows; only the first row per spectrogram_id is used. Each epoch
    shuffles them anew and drops the last partial batch. Batches: (images (B, 400, 300, 1)
    float32, y (B, 6) vote probabilities); the first is epoch `first_epoch`'s first (a resumed
    run). Returns (dataset, steps_per_epoch).
    """
    rows = first_row_per_spectrogram(train_rows)
    _check_spectrogram_files(layout, "train", rows)
    order, steps_per_epoch = epoch_order(len(rows), batch_size, seed, num_epochs)
    y = vote_probabilities(rows).astype(np.float32)  # (rows, 6)
    dataset = order.map(ReadSpectrogramWindow(layout, "train", rows, y)).batch(batch_size, drop_remainder=True)
    return _iterate(dataset[first_epoch * steps_per_epoch :], worker_count), steps_per_epoch


def make_spectrogram_eval_dataset(
    layout: HmsLayout,
    rows: pd.DataFrame,
    *,
    split: str = "train",
    batch_size: int = 32,
    worker_count: int = 0,
    time_shift: int = 0,
) -> tuple[grain.IterDataset, pd.DataFrame]:
    """Deterministic spectrogram pipeline, one image per row of `rows`, in order.

    rows: e.g. `labels.first_row_per_spectrogram(validation rows)` (windows at
    spectrogram_label_offset_seconds, batches (images, y (B, 6))) or test.csv rows with
    split="test" (no offset column: the first 300 rows of each file; no votes: images alone).
    The last batch may be partial. time_shift: rows (2 s) every window is moved by, a test-time
    augmentation view (`preprocess.shift_spectrogram_window`). Returns (dataset, rows reindexed
    0..n-1): prediction i belongs to row i.
    """
    rows = rows.reset_index(drop=True)
    _check_spectrogram_files(layout, split, rows)
    has_votes = set(constants.VOTE_COLUMNS) <= set(rows.columns)
    y = vote_probabilities(rows).astype(np.float32) if has_votes else None  # (rows, 6)
    dataset = (
        grain.MapDataset.range(len(rows))
        .map(ReadSpectrogramWindow(layout, split, rows, y, time_shift))
        .batch(batch_size, drop_remainder=False)
    )
    return _iterate(dataset, worker_count), rows
