"""Sliding-window prediction over a whole recording, for `inference.Ensemble` and `ensembles.Blend`.

    windows = ensemble.predict_recording("night.edf", stride_s=10)   # or a (time, 20) µV array
    windows.head()  # start_s  end_s  centre_s  seizure  lpd  gpd  lrda  grda  other

One row per window of the task's length (`Task.window_seconds`: 50 s for raw EEG), starting
every `stride_s` seconds, plus a last window ending where the recording ends when the stride
does not land there. The recording is read and prepared once (for raw EEG: the v5
preprocessing of the whole recording, `Task.prepare_recording`); windows are then cut and
predicted `batch_size` at a time, so memory holds one batch of model inputs and the (windows, 6)
table however long the recording is. Every batch has `batch_size` windows (the last one is
padded with copies of its last window and the copies dropped; a recording of fewer windows is one
batch), so each model is compiled for one input shape.
"""

import os
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from hms_keras import constants
from hms_keras.data.recordings import RecordingError

WINDOW_COLUMNS = ("start_s", "end_s", "centre_s")  # seconds from the recording's first sample
PREDICTION_COLUMNS = WINDOW_COLUMNS + constants.CLASSES  # the table `predict_recording` returns


def window_starts(recording_seconds: float, window_seconds: float, stride_s: float) -> np.ndarray:
    """(windows,) float64 start seconds: 0, stride_s, 2 stride_s, ... for every window that fits
    in `recording_seconds`, then `recording_seconds - window_seconds` when that grid misses the
    end (by more than a microsecond), so every second of the recording lies in some window.
    Empty when the recording is shorter than one window."""
    if stride_s <= 0:
        raise ValueError(f"stride_s must be positive, got {stride_s}")
    last = recording_seconds - window_seconds  # latest start that fits
    if last < 0:
        return np.empty(0)
    starts = np.arange(int(np.floor(last / stride_s + 1e-9)) + 1) * float(stride_s)
    if last - starts[-1] > 1e-6:
        starts = np.append(starts, last)
    return starts


def predict_recording(predictor, recording, *, stride_s: float = 10.0, batch_size: int = 32,
                      progress: bool = True) -> pd.DataFrame:
    """One row per sliding window of `recording`: `PREDICTION_COLUMNS`, i.e. start_s, end_s,
    centre_s (seconds) and the six class probabilities (`constants.CLASSES`, rows sum to 1).

    predictor: an `inference.Ensemble` or `ensembles.Blend`: its `task` reads and prepares the
    recording, its `window_probabilities(prepared, starts_s)` predicts one batch of windows.
    recording: a file path (read by the task: an EEG parquet, or EDF/BDF/... through MNE for raw
    EEG) or the array `task.read_recording` returns ((time, 20) µV at 200 Hz for raw EEG).
    A progress bar counts the windows unless `progress` is False. Raises RecordingError
    (RecordingTooShortError, FlatRecordingError, ...) naming the file when it cannot be predicted.
    """
    task = predictor.task
    if not isinstance(recording, str | os.PathLike):
        return predict_prepared(predictor, task.prepare_recording(recording), stride_s=stride_s,
                                batch_size=batch_size, progress=progress)
    source = Path(recording)
    prepared = prepare_file_recording(task, task.read_recording(source), source)
    return predict_prepared(predictor, prepared, stride_s=stride_s, batch_size=batch_size, progress=progress,
                            name=source.name)


def prepare_file_recording(task, recording, source: Path):
    """`task.prepare_recording(recording)` of a recording read from the file `source`, whose name
    starts the message of a RecordingError (too short, flat, ...)."""
    try:
        return task.prepare_recording(recording)
    except RecordingError as error:
        raise type(error)(f"{source}: {error}") from None


def predict_prepared(predictor, prepared, *, stride_s: float = 10.0, batch_size: int = 32, progress: bool = True,
                     name: str = "recording") -> pd.DataFrame:
    """`predict_recording` of a recording already through `predictor.task.prepare_recording`
    (for callers that use the prepared recording too, e.g. `recipes.annotate` for its figures);
    `name` labels the progress bar and errors."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    task = predictor.task
    seconds = task.recording_seconds(prepared)
    starts = window_starts(seconds, task.window_seconds, stride_s)  # (windows,)
    if starts.size == 0:  # a task whose preparation does not check the length
        raise RecordingError(f"{name}: {seconds:.1f} s, shorter than one {task.window_seconds} s window")
    batch_size = min(batch_size, starts.size)  # a short recording is one batch, unpadded
    probabilities = np.empty((starts.size, constants.NUM_CLASSES))  # (windows, 6)
    with tqdm(total=starts.size, unit="window", desc=name, disable=not progress) as bar:
        for first in range(0, starts.size, batch_size):
            batch = starts[first : first + batch_size]  # (<= batch_size,)
            padded = np.pad(batch, (0, batch_size - batch.size), mode="edge")  # (batch_size,)
            probabilities[first : first + batch.size] = predictor.window_probabilities(prepared, padded)[: batch.size]
            bar.update(batch.size)
    table = pd.DataFrame({"start_s": starts, "end_s": starts + task.window_seconds,
                          "centre_s": starts + task.window_seconds / 2})
    table[list(constants.CLASSES)] = probabilities
    return table


def predict_window(predictor, path, offset_seconds: float = 0.0) -> np.ndarray:
    """(6,) class probabilities of the one window starting `offset_seconds` into the file at `path`
    (0 for a Kaggle test file); predictor as for `predict_recording`."""
    task = predictor.task
    return predictor.window_probabilities(task.prepare_recording(task.read_recording(path)), [offset_seconds])[0]
