"""Writing the synthetic dataset: `generate_dataset`, the embedded dataset and the command line.

Prepares the output folder and writes the CSV files and each session's parquet files (sessions
rendered in worker processes when asked).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from hms_keras import constants, paths
from hms_keras.data.synthetic.plan import MARGIN_S, Session, _plan_dataset
from hms_keras.data.synthetic.render import _SPLIT_STREAM, FS, _spectrogram, render_session

logger = logging.getLogger(__name__)

SYNTHETIC_VERSION = 2  # bump when the generated data change; it names the embedded folder
# 2: spectrogram columns named as Kaggle's (LL_3.13, LL_15.63; v1 wrote LL_3.12, LL_15.62)
DEFAULT_EMBEDDED_EEGS = 600


# --------------------------------------------------------------------------------------------
# public API


def generate_dataset(out_dir, n_eegs: int = 600, seed: int = 0, n_test_eegs: int | None = None,
                     workers: int = 1) -> Path:
    """Write a synthetic dataset in the Kaggle layout to `out_dir` (created; must be empty).

    `n_eegs` train EEGs and `n_test_eegs` test EEGs (default: max(2, n_eegs // 20)) are made;
    `workers` > 1 renders sessions in that many processes (same output). Returns `out_dir`.
    """
    if n_eegs < 1:
        raise ValueError(f"n_eegs must be at least 1, got {n_eegs}")
    n_test_eegs = max(2, n_eegs // 20) if n_test_eegs is None else n_test_eegs
    if n_test_eegs < 1:
        raise ValueError(f"n_test_eegs must be at least 1, got {n_test_eegs}")
    out_dir = _prepare_out_dir(Path(out_dir))
    train, test, sessions = _plan_dataset(seed, n_eegs, n_test_eegs)
    _render_sessions(sessions, seed, out_dir, workers)
    _write_csvs(out_dir, train, test)
    return out_dir


def embedded_data_dir(n_eegs: int = DEFAULT_EMBEDDED_EEGS, seed: int = 0, workers: int = 2) -> Path:
    """The embedded synthetic dataset, generated on first use under `paths.cache_root()/embedded/`.

    Generation writes into a temporary sibling folder that is renamed into place when complete,
    so an interrupted run never leaves a folder that looks finished.
    """
    target = paths.cache_root() / "embedded" / f"synthetic-v{SYNTHETIC_VERSION}-n{n_eegs}-s{seed}"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp_dirs(target)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    logger.info("generating the embedded synthetic dataset (%d EEGs, seed %d) in %s", n_eegs, seed, target)
    generate_dataset(tmp, n_eegs=n_eegs, seed=seed, workers=workers)
    try:
        os.replace(tmp, target)
    except OSError:
        if not target.is_dir():
            raise
        shutil.rmtree(tmp)  # another process finished the same dataset first
    return target


def main(argv=None) -> None:
    """Command line: `python -m hms_keras.data.synthetic --out DIR --n-eegs N --seed S`."""
    parser = argparse.ArgumentParser(
        prog="python -m hms_keras.data.synthetic",
        description="Write a synthetic HMS dataset in the exact Kaggle layout.")
    parser.add_argument("--out", required=True, type=Path, help="output folder (created; must be empty)")
    parser.add_argument("--n-eegs", type=int, default=600, help="number of train EEGs (default 600)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--n-test-eegs", type=int, default=None,
                        help="number of test EEGs (default max(2, n_eegs // 20))")
    parser.add_argument("--workers", type=int, default=2, help="render processes (default 2)")
    args = parser.parse_args(argv)
    out = generate_dataset(args.out, n_eegs=args.n_eegs, seed=args.seed,
                           n_test_eegs=args.n_test_eegs, workers=args.workers)
    print(out)


# --------------------------------------------------------------------------------------------
# output folder handling


def _prepare_out_dir(out_dir: Path) -> Path:
    """Create `out_dir` and the four parquet folders; refuse a folder that already has content."""
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir}: output folder is not empty; choose a new folder")
    for split in _SPLIT_STREAM:
        (out_dir / f"{split}_eegs").mkdir(parents=True, exist_ok=True)
        (out_dir / f"{split}_spectrograms").mkdir(exist_ok=True)
    return out_dir


def _remove_stale_tmp_dirs(target: Path) -> None:
    """Delete temporary folders of `target` left by generator processes that no longer run."""
    for tmp in target.parent.glob(f".{target.name}.tmp-*"):
        pid = int(tmp.name.rsplit("-", 1)[1])
        if not _process_alive(pid):
            shutil.rmtree(tmp, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    """Whether a process with this id exists (signal 0 probes without touching it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------------------------
# CSV files


def _write_csvs(out_dir: Path, train: pd.DataFrame, test: pd.DataFrame) -> None:
    """Write train.csv, test.csv and a uniform sample_submission.csv."""
    train.to_csv(out_dir / "train.csv", index=False)
    test.to_csv(out_dir / "test.csv", index=False)
    submission = pd.DataFrame({"eeg_id": test["eeg_id"]})
    for column in constants.VOTE_COLUMNS:
        submission[column] = 1.0 / constants.NUM_CLASSES
    submission.to_csv(out_dir / "sample_submission.csv", index=False)


# --------------------------------------------------------------------------------------------
# rendering: session signal -> EEG and spectrogram parquet files


def _render_sessions(sessions: list[Session], seed: int, out_dir: Path, workers: int) -> None:
    """Render and write every session, in `workers` processes when > 1, with a progress bar.

    Workers are spawned, not forked: forking a process that already runs JAX or TensorFlow
    threads (a recipe that imported keras) can hang.
    """
    jobs = [(session, seed, out_dir) for session in sessions]
    progress = {"total": len(jobs), "desc": "synthetic sessions", "unit": "session"}
    if workers <= 1:
        for job in tqdm(jobs, **progress):
            _write_session(job)
        return
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for _ in tqdm(pool.map(_write_session, jobs), **progress):
            pass


def _write_session(job: tuple[Session, int, Path]) -> None:
    """Render one session and write its spectrogram and EEG parquet files.

    The signal is rounded to 1/16 µV steps (like an ADC) before both, so the spectrogram is
    exactly that of the stored EEG values.
    """
    session, seed, out_dir = job
    signal = np.round(render_session(session, seed) * 16.0) / 16.0  # (samples, 20) float32 µV
    spectrogram = _spectrogram(signal, session.seconds // constants.SPECTROGRAM_SECONDS_PER_ROW)
    _write_spectrogram(out_dir / f"{session.split}_spectrograms" / f"{session.spectrogram_id}.parquet", spectrogram)
    for eeg in session.eegs:
        first = (eeg.start_s + MARGIN_S) * FS
        _write_eeg(out_dir / f"{session.split}_eegs" / f"{eeg.eeg_id}.parquet",
                   signal[first:first + eeg.seconds * FS])


def _write_eeg(path: Path, eeg: np.ndarray) -> None:
    """Write (time, 20) float32 µV as the 20 EEG_COLUMNS of a parquet file."""
    table = pa.table({name: eeg[:, k] for k, name in enumerate(constants.EEG_COLUMNS)})
    _write_parquet(table, path)


def _write_spectrogram(path: Path, values: np.ndarray) -> None:
    """Write (rows, 400) float32 as `time` (int64 odd seconds) + the 400 SPECTROGRAM_COLUMNS."""
    columns = {"time": np.arange(1, 2 * len(values), 2, dtype=np.int64)}
    columns.update({name: values[:, k] for k, name in enumerate(constants.SPECTROGRAM_COLUMNS)})
    _write_parquet(pa.table(columns), path)


def _write_parquet(table: pa.Table, path: Path) -> None:
    """Write float tables compactly (zstd, byte-stream split, no dictionaries); any reader opens them."""
    pq.write_table(table, path, compression="zstd", use_dictionary=False, use_byte_stream_split=True)
