"""On-disk cache of preprocessed v5 EEGs: built once per split, in parallel, resumable.

One file per recording, `<cache_dir>/<eeg_id>.npy`, holding a (frames, 2, 19) float16 array at
40 Hz: `[:, 0]` the 19 probes in mV, `[:, 1]` their channel quality factor (CQF), both from
`hms_keras.data.preprocess.preprocess_eeg`. `<cache_dir>/manifest.json` records the cache version,
the preprocessing parameters and the source (data folder, split). Every file is written to a
temporary name in the same folder and renamed into place, so a killed build never leaves a
partial `<eeg_id>.npy` behind and the next build only does what is missing.

Next to each array, `<eeg_id>.source.json` records what it was made from: the source parquet's
name, size (bytes) and modification time (ns), the cache version and a digest of the
preprocessing parameters. It is written after the array and removed before a rebuild, so an
array counts as cached only while its record matches the source file as it is now. Every build
re-checks all records (a `stat` of the source and a read of the record per recording: ~3 s for
17k on a busy 2-core machine) and rebuilds, with a warning naming the files, each recording whose
source changed. Size and mtime rather than a content hash: a hash would read the whole dataset
(tens of GB) on every build to learn that nothing changed, while any rewrite of a file (new
download, copy, regeneration) gives it a new mtime. Not noticed: a different file of the same
size put in place with its mtime kept (`cp -p`, `rsync -t`, `touch -r`); delete the cache folder
after such a swap.

Builds of one folder take turns: each holds `<cache_dir>/build.lock` (a `filelock` OS lock, freed
when its holder dies) from its first look at the folder to its last write, so a second process
started on the same cache waits, saying so once, then finds the work done and does only what is
left. Temporary files found under the lock are a dead build's, and are deleted. The worker
processes of a build end with it, however it ends (Ctrl-C, SIGTERM, kill -9): none is left
running, writing into the cache, after the build is gone.
"""

import contextlib
import ctypes
import hashlib
import json
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import filelock
import numpy as np
from tqdm import tqdm

from hms_keras import paths
from hms_keras.data.hms import SPLITS, HmsDataError, HmsLayout, read_eeg
from hms_keras.data.preprocess import PREPROCESS_PARAMETERS, preprocess_eeg

logger = logging.getLogger(__name__)

CACHE_VERSION = 3  # 3: a <eeg_id>.source.json record per array; 2: parquet nulls interpolated, NaN values no longer
MANIFEST_NAME = "manifest.json"
ARRAY_LAYOUT = "(frames, 2, 19) float16, 40 Hz; [:, 0] = probes in mV, [:, 1] = CQF"
RECORD_SUFFIX = ".source.json"
LOCK_NAME = "build.lock"
_TMP_SUFFIX = ".tmp"
# Source files whose rebuild warning names them one by one; more are counted.
_MAX_NAMED_FILES = 20


# Spawned workers take seconds to start (imports); below this many recordings each they lose.
MIN_JOBS_PER_WORKER = 16
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_PARENT_POLL_S = 0.5  # how often a worker without prctl checks that its parent is alive


def default_cache_dir(layout: HmsLayout, split: str) -> Path:
    """Where `build_eeg_cache` puts a split's cache unless told otherwise."""
    return paths.data_cache_dir(layout.data_dir, f"v5_eeg/{split}")


def _format_manifest() -> dict:
    """The manifest fields that decide whether cached arrays are still valid (JSON-normalised)."""
    return json.loads(
        json.dumps({"version": CACHE_VERSION, "layout": ARRAY_LAYOUT, "parameters": PREPROCESS_PARAMETERS})
    )


def _preprocessing_digest() -> str:
    """16 hex digits identifying `_format_manifest()` (cache version, array layout, parameters)."""
    return hashlib.sha1(json.dumps(_format_manifest(), sort_keys=True).encode()).hexdigest()[:16]


def _record_path(out_path: Path) -> Path:
    """`<eeg_id>.source.json` next to the cached array `<eeg_id>.npy`."""
    return out_path.with_name(out_path.stem + RECORD_SUFFIX)


def _source_record(eeg_path: Path, preprocessing: str) -> dict:
    """What an array made now from `eeg_path` is made from: the file's name, size (bytes) and
    mtime (ns), the cache version and `preprocessing` (`_preprocessing_digest()`). Raises
    FileNotFoundError when the file is missing."""
    stat = os.stat(eeg_path)
    return {
        "version": CACHE_VERSION,
        "preprocessing": preprocessing,
        "source": {"file": os.path.basename(eeg_path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns},
    }


def _read_record(record_path) -> dict | None:
    """A stored source record (`record_path`: str or Path), or None when it is missing or unreadable."""
    try:
        with open(record_path, "rb") as handle:
            return json.loads(handle.read())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _expected_manifest(layout: HmsLayout, split: str) -> dict:
    source = {"data_dir": str(Path(layout.data_dir).resolve()), "split": split}
    return {**_format_manifest(), "source": source}


def _read_manifest(cache_dir: Path) -> dict | None:
    """The manifest as a dict, or None when it is missing or not a JSON object."""
    try:
        manifest = json.loads((cache_dir / MANIFEST_NAME).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _write_atomically(path: Path, write) -> None:
    """Call write(file) on a temporary file next to `path`, flush it to disk, rename it to `path`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}{_TMP_SUFFIX}")
    with open(tmp, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def preprocess_recording(raw_uv) -> np.ndarray:
    """`preprocess.preprocess_eeg` of one raw recording in the layout this cache stores and hands
    out windows of: (frames, 2, 19) float16 at 40 Hz, `[:, 0]` = the 19 probes in mV, `[:, 1]` =
    their CQF (ARRAY_LAYOUT). raw_uv and errors as for `preprocess_eeg`."""
    signal, cqf = preprocess_eeg(raw_uv)  # (frames, 19) float16 each
    return np.stack([signal, cqf], axis=1)  # (frames, 2, 19)


def _cache_one(eeg_path: Path, out_path: Path) -> None:
    """Read, preprocess and store one recording, then its source record (runs in a worker process
    or in-process). The record is taken before the read: a file that changes during the read
    no longer matches it, so the next build redoes it."""
    try:
        record = _source_record(eeg_path, _preprocessing_digest())
    except FileNotFoundError as err:
        raise HmsDataError(f"{eeg_path}: file not found") from err
    raw = read_eeg(eeg_path)  # (time, 20) float32 µV, 200 Hz, masked at parquet nulls
    try:
        stacked = preprocess_recording(raw)  # (frames, 2, 19) float16
    except ValueError as err:
        raise HmsDataError(f"{eeg_path}: cannot preprocess: {err}") from err
    _write_atomically(out_path, lambda handle: np.save(handle, stacked))
    encoded = json.dumps(record).encode()
    _write_atomically(_record_path(out_path), lambda handle: handle.write(encoded))


def _clear(cache_dir: Path) -> None:
    """Delete the cache's own files: cached arrays and their records, temporary files, the manifest."""
    for path in cache_dir.glob("*.npy"):
        path.unlink()
    for path in cache_dir.glob(f"*{RECORD_SUFFIX}"):
        path.unlink()
    for path in cache_dir.glob(f".*{_TMP_SUFFIX}"):
        path.unlink()
    (cache_dir / MANIFEST_NAME).unlink(missing_ok=True)


def build_eeg_cache(
    layout: HmsLayout, split: str, eeg_ids, cache_dir=None, workers: int = 2, *, errors: dict | None = None
) -> Path:
    """Preprocess every listed recording of a split into `cache_dir`; returns `cache_dir`.

    layout: the data folder; split: "train" or "test"; eeg_ids: iterable of ints (duplicates are
    fine). cache_dir defaults to `paths.data_cache_dir(layout.data_dir, "v5_eeg/<split>")`.
    workers > 1 runs that many spawned processes; workers <= 1 works in this process.

    Resumable: recordings whose `<eeg_id>.npy` exists with a record matching the source file are
    skipped, so re-running after an interruption finishes only the rest; a recording whose source
    file changed (size or mtime) since it was cached is rebuilt, with a warning naming the files.
    A manifest written with other parameters, cache version or source marks the whole cache
    stale: it is cleared (and logged) and rebuilt.
    Raises HmsDataError naming the file when a recording is malformed; files finished before
    that stay in place. Given a dict as `errors`, a malformed recording stops nothing: its
    HmsDataError is stored under its eeg_id, it stays out of the cache, and every other recording
    is built (so a caller can name all the bad files at once; the dict is filled in place).

    Safe to run from several processes at once: builds of one folder take turns on its lock file
    (`build.lock`); one that has to wait logs so once, then finds the others' work done.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir(layout, split)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _build_lock(cache_dir):
        _build_locked(layout, split, eeg_ids, cache_dir, workers, errors)
    return cache_dir


@contextlib.contextmanager
def _build_lock(cache_dir: Path):
    """Hold `<cache_dir>/build.lock` for the block, waiting for whoever holds it (with one warning).

    A `filelock.FileLock`: an OS lock (flock) on the file, which the OS releases when its holder
    dies, however it dies, so a killed build never leaves the folder locked. The file stays.
    """
    lock = filelock.FileLock(cache_dir / LOCK_NAME)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        logger.warning("waiting for %s (another process is building it)", cache_dir)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _build_locked(layout: HmsLayout, split: str, eeg_ids, cache_dir: Path, workers: int, errors: dict | None) -> None:
    """`build_eeg_cache` once it holds the folder's lock: nobody else writes in `cache_dir`."""
    expected = _expected_manifest(layout, split)
    found = _read_manifest(cache_dir)
    if found != expected:
        if found is not None or any(cache_dir.glob("*.npy")):
            differing = sorted(key for key in expected.keys() | (found or {}).keys()
                               if (found or {}).get(key) != expected.get(key))
            logger.warning(
                "EEG cache %s is stale (manifest %s: %s): clearing it and rebuilding",
                cache_dir, "differs in" if found else "missing or unreadable", ", ".join(differing),
            )
        _clear(cache_dir)
        manifest = json.dumps(expected, indent=2).encode()
        _write_atomically(cache_dir / MANIFEST_NAME, lambda handle: handle.write(manifest))
    for path in cache_dir.glob(f".*{_TMP_SUFFIX}"):
        path.unlink()  # left behind by a killed build (a live one would hold the lock)

    unique_ids = dict.fromkeys(int(eeg_id) for eeg_id in eeg_ids)
    jobs, changed = _outdated_or_missing(layout, split, unique_ids, cache_dir)
    if changed:
        more = f" and {len(changed) - _MAX_NAMED_FILES} more" if len(changed) > _MAX_NAMED_FILES else ""
        logger.warning(
            "EEG cache %s: %d source file(s) changed since they were cached, rebuilding them: %s%s",
            cache_dir, len(changed), ", ".join(str(path) for path in changed[:_MAX_NAMED_FILES]), more,
        )
    logger.info("EEG cache %s: %d of %d recordings to preprocess", cache_dir, len(jobs), len(unique_ids))
    with tqdm(total=len(jobs), desc=f"v5 EEG cache ({split})", unit="eeg") as progress:
        if workers <= 1 or len(jobs) < MIN_JOBS_PER_WORKER * workers:
            for eeg_id, job in jobs.items():
                try:
                    _cache_one(*job)
                except HmsDataError as error:
                    if errors is None:
                        raise
                    errors[eeg_id] = error
                progress.update()
        else:
            _run_in_processes(jobs, workers, progress, errors)


def _outdated_or_missing(layout: HmsLayout, split: str, eeg_ids, cache_dir: Path) -> tuple[dict, list[Path]]:
    """The recordings to (re)build and the source files among them that changed since they were cached.

    Returns ({eeg_id: (source parquet, cached array path)}, [changed source parquet]). A recording is
    up to date when its array and its record exist and the record equals `_source_record` of its
    source file now. The arrays and records of the others are deleted here (record first), so no
    stale array stays readable through `EegCache`, even when its rebuild fails.
    """
    preprocessing = _preprocessing_digest()
    present = set(os.listdir(cache_dir))  # one listing instead of two `exists` per recording
    jobs, changed = {}, []
    for eeg_id in eeg_ids:  # strings and os calls: ~40 % faster than pathlib over 17k recordings
        eeg_path, array_name, record_name = layout.eeg_path(split, eeg_id), f"{eeg_id}.npy", f"{eeg_id}{RECORD_SUFFIX}"
        if array_name in present and record_name in present:
            try:
                current = _source_record(eeg_path, preprocessing)
            except FileNotFoundError:
                current = None  # the build reports it when it reads the file
            stored = _read_record(os.path.join(cache_dir, record_name))
            if stored == current:
                continue
            if current is not None and stored is not None and stored.get("source") != current["source"]:
                changed.append(eeg_path)
        out_path = cache_dir / array_name
        if array_name in present or record_name in present:
            _record_path(out_path).unlink(missing_ok=True)
            out_path.unlink(missing_ok=True)
        jobs[eeg_id] = (eeg_path, out_path)
    return jobs, changed


def _run_in_processes(jobs: dict, workers: int, progress, errors: dict | None) -> None:
    """Run `_cache_one` over jobs ({eeg_id: arguments}) in `workers` spawned processes; stop at the
    first error, or store HmsDataErrors in `errors` (by eeg_id) and go on when it is a dict.

    The workers end with this process (`_exit_with_parent`). Linux ties that to the thread that
    started them: this one, which keeps running until the pool is drained.
    """
    context = multiprocessing.get_context("spawn")  # fork is unsafe once JAX/TF threads exist
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_exit_with_parent, initargs=(os.getpid(),)
    ) as pool:
        futures = {pool.submit(_cache_one, *job): eeg_id for eeg_id, job in jobs.items()}
        try:
            for future in as_completed(futures):
                try:
                    future.result()
                except HmsDataError as error:
                    if errors is None:
                        raise
                    errors[futures[future]] = error
                progress.update()
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise


def _exit_with_parent(parent_pid: int) -> None:
    """Worker initializer: end this worker as soon as the process that started it ends.

    Without it a build killed with SIGTERM or kill -9 leaves its workers running (~900 MB each)
    and writing into the cache. On Linux the kernel SIGKILLs the worker when its parent dies
    (prctl PR_SET_PDEATHSIG); elsewhere a daemon thread polls the parent's pid. SIGINT is
    ignored: Ctrl-C reaches the whole process group, and the parent's KeyboardInterrupt stops
    the pool (jobs already running finish, then the workers exit).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not _set_parent_death_signal():
        threading.Thread(target=_watch_parent, args=(parent_pid,), name="watch-parent", daemon=True).start()
    if os.getppid() != parent_pid:  # the parent died before the death signal was armed
        os._exit(1)


def _set_parent_death_signal() -> bool:
    """Ask Linux to SIGKILL this process when its parent dies; False where prctl is unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int) -> None:
    """Exit this process at once when its parent is gone (it is re-parented: the pid changes)."""
    while os.getppid() == parent_pid:
        time.sleep(_PARENT_POLL_S)
    os._exit(1)


class EegCache:
    """Read-only view of a built EEG cache folder; hands out label windows.

    `EegCache(cache_dir)` checks the manifest against this hms_keras version's preprocessing and
    raises HmsDataError (with the call that rebuilds it) when it is missing or different.
    Arrays are opened lazily with `np.load(mmap_mode="r")`; up to `MAX_OPEN_FILES` stay mapped.
    Picklable (open maps are dropped, e.g. for Grain worker processes); `repr` depends only on
    the folder, so Grain checkpoints recognise the same source.
    """

    MAX_OPEN_FILES = 256  # each map holds a file descriptor

    def __init__(self, cache_dir):
        self.cache_dir = Path(cache_dir)
        manifest_path = self.cache_dir / MANIFEST_NAME
        found = _read_manifest(self.cache_dir)
        if found is None:
            raise HmsDataError(
                f"{manifest_path}: no EEG cache manifest (missing or unreadable); build the cache with "
                f"{_rebuild_hint(self.cache_dir, {})}"
            )
        expected = _format_manifest()
        differing = sorted(key for key in expected if found.get(key) != expected[key])
        if differing:
            raise HmsDataError(
                f"{manifest_path}: cache built with a different {', '.join(differing)} than this hms_keras "
                f"uses; rebuild it (the stale files are cleared) with {_rebuild_hint(self.cache_dir, found)}"
            )
        self._source = found.get("source", {})
        self._maps = OrderedDict()

    def __repr__(self) -> str:
        return f"EegCache({str(self.cache_dir)!r})"

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_maps": OrderedDict()}

    def _open(self, eeg_id: int) -> np.ndarray:
        """The (frames, 2, 19) float16 memory map of one recording."""
        array = self._maps.pop(eeg_id, None)
        if array is None:
            path = self.cache_dir / f"{eeg_id}.npy"
            if not path.exists():
                raise HmsDataError(
                    f"{path}: eeg_id {eeg_id} is not in the EEG cache; add it with "
                    f"{_rebuild_hint(self.cache_dir, {'source': self._source})} "
                    "(resumable: only missing recordings are preprocessed)"
                )
            array = np.load(path, mmap_mode="r")
            if len(self._maps) >= self.MAX_OPEN_FILES:
                self._maps.popitem(last=False)
        self._maps[eeg_id] = array  # most recently used last
        return array

    def num_frames(self, eeg_id: int) -> int:
        """Length of a cached recording in 40 Hz frames (>= 2000)."""
        return self._open(int(eeg_id)).shape[0]

    def window(self, eeg_id: int, start_frame: int, n_frames: int) -> np.ndarray:
        """Frames [start_frame, start_frame + n_frames) of one recording as (n_frames, 2, 19) float32.

        `[:, 0]` = the 19 probes in mV, `[:, 1]` = their CQF. When the recording ends earlier
        (its trailing NaN frames were dropped), the signal is reflect-padded and the CQF
        zero-padded to n_frames, as the reference pads a short window. Raises HmsDataError when
        start_frame is negative or not inside the recording.
        """
        array = self._open(int(eeg_id))  # (frames, 2, 19) float16
        if not 0 <= start_frame < array.shape[0]:
            raise HmsDataError(
                f"{self.cache_dir / f'{int(eeg_id)}.npy'}: window start frame {start_frame} is outside "
                f"the recording's {array.shape[0]} frames"
            )
        return recording_window(array, start_frame, n_frames)  # (n_frames, 2, 19)


def recording_window(recording: np.ndarray, start_frame: int, n_frames: int) -> np.ndarray:
    """Frames [start_frame, start_frame + n_frames) of a preprocessed recording (frames, 2, 19)
    (`preprocess_recording`, any float dtype) as (n_frames, 2, 19) float32. When the
    recording ends earlier, the signal is reflect-padded and the CQF zero-padded to n_frames, as
    the reference pads a short window. start_frame must lie inside the recording."""
    window = np.asarray(recording[start_frame : start_frame + n_frames], dtype=np.float32)  # (<= n, 2, 19)
    missing = n_frames - window.shape[0]
    if missing == 0:
        return window
    signal = np.pad(window[:, 0], ((0, missing), (0, 0)), mode="reflect")  # (n_frames, 19)
    cqf = np.pad(window[:, 1], ((0, missing), (0, 0)))  # (n_frames, 19)
    return np.stack([signal, cqf], axis=1)  # (n_frames, 2, 19)


def _rebuild_hint(cache_dir: Path, manifest: dict) -> str:
    """The Python call that (re)builds cache_dir, with the data folder and split when known."""
    source = manifest.get("source") or {}
    data_dir = repr(source["data_dir"]) if "data_dir" in source else "<data_dir>"
    split = repr(source["split"]) if "split" in source else "<'train' or 'test'>"
    return (
        f"`from hms_keras.data.cache import build_eeg_cache; from hms_keras.data.hms import HmsLayout; "
        f"build_eeg_cache(HmsLayout({data_dir}), {split}, eeg_ids, cache_dir={str(cache_dir)!r})`"
    )
