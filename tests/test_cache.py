"""The preprocessed-EEG cache: build (parallel, atomic, resumable, stale detection) and EegCache."""

import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from hms_keras import constants, paths
from hms_keras.data import cache
from hms_keras.data.cache import RECORD_SUFFIX, EegCache, build_eeg_cache
from hms_keras.data.hms import HmsDataError, HmsLayout, read_eeg
from hms_keras.data.preprocess import preprocess_eeg


def write_eeg(data_dir, eeg_id: int, rows: int = 10_000, seed: int = 0, split: str = "train"):
    """Write a random `<split>_eegs/<eeg_id>.parquet` (rows x 20 float32 µV) and return its path."""
    rng = np.random.default_rng(seed)
    shared = 50.0 * np.sin(np.arange(rows) * 2 * np.pi * 10 / 200)[:, None]  # (rows, 1)
    values = (shared + rng.normal(0.0, 10.0, (rows, 20))).astype(np.float32)  # (rows, 20) µV
    path = data_dir / f"{split}_eegs" / f"{eeg_id}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(values, columns=list(constants.EEG_COLUMNS)).to_parquet(path, index=False)
    return path


@pytest.fixture
def layout(tmp_path):
    data_dir = tmp_path / "data"
    for eeg_id in range(1, 4):
        write_eeg(data_dir, eeg_id, rows=10_000 + 1000 * eeg_id, seed=eeg_id)
    return HmsLayout(data_dir)


def file_ids(cache_dir) -> dict:
    """{file name: (inode, mtime_ns)} of the cached arrays."""
    return {path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in cache_dir.glob("*.npy")}


def count_preprocess_calls(monkeypatch) -> list:
    calls = []

    def counting(raw):
        calls.append(raw.shape)
        return preprocess_eeg(raw)

    monkeypatch.setattr(cache, "preprocess_eeg", counting)
    return calls


# --- build ----------------------------------------------------------------------------------------


def test_build_stores_signal_and_cqf_with_a_manifest(layout, tmp_path):
    cache_dir = build_eeg_cache(layout, "train", [3, 1, 2, 1], cache_dir=tmp_path / "cache", workers=1)
    assert cache_dir == tmp_path / "cache"
    assert sorted(file_ids(cache_dir)) == ["1.npy", "2.npy", "3.npy"]
    assert not list(cache_dir.glob(".*"))  # no temporary files left
    for eeg_id in (1, 2, 3):
        stored = np.load(cache_dir / f"{eeg_id}.npy")
        signal, cqf = preprocess_eeg(read_eeg(layout.eeg_path("train", eeg_id)))
        assert stored.dtype == np.float16
        assert stored.shape == (2000 + 200 * eeg_id, 2, 19)
        np.testing.assert_array_equal(stored[:, 0], signal)
        np.testing.assert_array_equal(stored[:, 1], cqf)
    manifest = json.loads((cache_dir / "manifest.json").read_text())
    assert manifest["version"] == cache.CACHE_VERSION
    assert manifest["parameters"]["cqf_half_life_frames"] == 13.0
    assert manifest["source"] == {"data_dir": str(layout.data_dir.resolve()), "split": "train"}


def test_default_cache_dir_is_under_the_cache_root(layout):
    cache_dir = build_eeg_cache(layout, "train", [1], workers=1)
    assert cache_dir == paths.data_cache_dir(layout.data_dir, "v5_eeg/train")
    assert cache_dir.is_relative_to(paths.cache_root())
    assert (cache_dir / "1.npy").is_file()


def test_process_pool_build_equals_in_process_build(layout, tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "MIN_JOBS_PER_WORKER", 1)  # use the pool even for 3 recordings
    serial = build_eeg_cache(layout, "train", [1, 2, 3], cache_dir=tmp_path / "serial", workers=1)
    parallel = build_eeg_cache(layout, "train", [1, 2, 3], cache_dir=tmp_path / "parallel", workers=2)
    for eeg_id in (1, 2, 3):
        assert (serial / f"{eeg_id}.npy").read_bytes() == (parallel / f"{eeg_id}.npy").read_bytes()


def test_finished_recordings_are_skipped(layout, tmp_path, monkeypatch):
    cache_dir = build_eeg_cache(layout, "train", [1, 2], cache_dir=tmp_path / "cache", workers=1)
    before = file_ids(cache_dir)
    calls = count_preprocess_calls(monkeypatch)
    build_eeg_cache(layout, "train", [1, 2, 3], cache_dir=cache_dir, workers=1)
    assert len(calls) == 1
    after = file_ids(cache_dir)
    assert {name: after[name] for name in before} == before


_SLOW_BUILD = """
import sys, time
from hms_keras.data import cache
from hms_keras.data.hms import HmsLayout

def slow(raw, _real=cache.preprocess_eeg):
    time.sleep(0.25)
    return _real(raw)

cache.preprocess_eeg = slow
cache.build_eeg_cache(HmsLayout(sys.argv[1]), "train", range(1, 13), cache_dir=sys.argv[2], workers=1)
"""


def test_killed_build_resumes_with_the_missing_recordings_only(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    for eeg_id in range(1, 13):
        write_eeg(data_dir, eeg_id, seed=eeg_id)
    cache_dir = tmp_path / "cache"
    process = subprocess.Popen(
        [sys.executable, "-c", _SLOW_BUILD, str(data_dir), str(cache_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while len(list(cache_dir.glob(f"*{RECORD_SUFFIX}"))) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    # Done = an array with its source record; an array the kill caught before its record is redone.
    done = {name: ids for name, ids in file_ids(cache_dir).items()
            if (cache_dir / name.replace(".npy", RECORD_SUFFIX)).exists()}
    assert 3 <= len(done) < 12, f"kill the build midway, found {len(done)} finished recordings"

    calls = count_preprocess_calls(monkeypatch)
    build_eeg_cache(HmsLayout(data_dir), "train", range(1, 13), cache_dir=cache_dir, workers=1)
    after = file_ids(cache_dir)
    assert sorted(after) == sorted(f"{eeg_id}.npy" for eeg_id in range(1, 13))
    assert {name: after[name] for name in done} == done  # not rewritten
    assert len(calls) == 12 - len(done)
    assert not list(cache_dir.glob(".*"))  # no temporary file of the killed build is left


_LOGGED_BUILD = """
import os, sys, time
from pathlib import Path
from hms_keras.data import cache
from hms_keras.data.hms import HmsLayout

data_dir, cache_dir, sync_dir = sys.argv[1], sys.argv[2], Path(sys.argv[3])

def logged(raw, _real=cache.preprocess_eeg):
    with open(sync_dir / "calls.log", "a") as handle:
        handle.write(f"{os.getpid()}\\n")
    time.sleep(0.25)
    return _real(raw)

cache.preprocess_eeg = logged
(sync_dir / f"ready-{os.getpid()}").touch()
while len(list(sync_dir.glob("ready-*"))) < 2:  # start building together, imports done
    time.sleep(0.01)
cache.build_eeg_cache(HmsLayout(data_dir), "train", range(1, 9), cache_dir=cache_dir, workers=1)
"""


def test_concurrent_builds_take_turns_and_build_each_recording_once(tmp_path):
    data_dir = tmp_path / "data"
    for eeg_id in range(1, 9):
        write_eeg(data_dir, eeg_id, seed=eeg_id)
    cache_dir, sync_dir = tmp_path / "cache", tmp_path / "sync"
    sync_dir.mkdir()
    command = [sys.executable, "-c", _LOGGED_BUILD, str(data_dir), str(cache_dir), str(sync_dir)]
    processes = [
        subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    stderr = [process.communicate(timeout=300)[1] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], stderr
    waited = [f"waiting for {cache_dir} (another process is building it)" in text for text in stderr]
    assert sorted(waited) == [False, True]  # the second one said so...
    assert stderr[waited.index(True)].count("waiting for") == 1  # ...once
    builders = (sync_dir / "calls.log").read_text().split()
    assert len(builders) == 8 and len(set(builders)) == 1  # every recording preprocessed once, by the first
    assert sorted(file_ids(cache_dir)) == sorted(f"{eeg_id}.npy" for eeg_id in range(1, 9))
    assert not list(cache_dir.glob(".*"))  # no temporary file left
    EegCache(cache_dir).window(8, 0, 2000)


_POOLED_BUILD = """
import signal, sys, time
from hms_keras.data import cache
from hms_keras.data.hms import HmsLayout

def slow(raw, _real=cache.preprocess_eeg):
    time.sleep(1.0)
    return _real(raw)

cache.preprocess_eeg = slow  # top level: spawned workers import this file as __mp_main__ and get it too
cache.MIN_JOBS_PER_WORKER = 1
if "--no-prctl" in sys.argv:  # the fallback: a thread polling the parent's pid
    cache._set_parent_death_signal = lambda: False

if __name__ == "__main__":
    # Ctrl-C raises KeyboardInterrupt, as in a terminal, also when pytest runs as a background job
    # (`cmd &` in a script), which inherits SIGINT ignored and would let the build finish
    signal.signal(signal.SIGINT, signal.default_int_handler)
    cache.build_eeg_cache(HmsLayout(sys.argv[1]), "train", range(1, int(sys.argv[3]) + 1), cache_dir=sys.argv[2],
                          workers=2)
"""


@pytest.mark.parametrize("how", ["SIGKILL", "SIGKILL --no-prctl", "SIGTERM", "SIGINT to the process group"])
def test_workers_end_with_the_build(tmp_path, how):
    psutil = pytest.importorskip("psutil")
    data_dir = tmp_path / "data"
    recordings = 48  # enough that the signal lands midway on an idle machine (12 could all finish first)
    for eeg_id in range(1, recordings + 1):
        write_eeg(data_dir, eeg_id, seed=eeg_id)
    cache_dir, script = tmp_path / "cache", tmp_path / "pooled_build.py"
    script.write_text(_POOLED_BUILD)
    process = subprocess.Popen(
        [sys.executable, str(script), str(data_dir), str(cache_dir), str(recordings), *how.split()[1:]],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group, for the Ctrl-C case
    )
    try:
        deadline = time.monotonic() + 120
        while not list(cache_dir.glob("*.npy")) and time.monotonic() < deadline:
            time.sleep(0.05)  # wait until the workers are busy writing
        children = psutil.Process(process.pid).children(recursive=True)
        workers = [child for child in children if "spawn_main" in " ".join(child.cmdline())]
        assert len(workers) == 2, [child.cmdline() for child in children]
    finally:
        if how == "SIGINT to the process group":
            os.killpg(process.pid, signal.SIGINT)
        else:
            process.send_signal(getattr(signal, how.split()[0]))
    process.wait(timeout=30)
    _, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, [child.cmdline() for child in alive]  # workers (and multiprocessing's tracker) gone

    def writes():
        return {path.name: path.stat().st_size for path in cache_dir.iterdir()}

    before = writes()
    time.sleep(1.0)
    assert writes() == before  # nothing writes into the cache any more
    assert len(list(cache_dir.glob("*.npy"))) < recordings, "stop the build midway"
    build_eeg_cache(HmsLayout(data_dir), "train", range(1, recordings + 1), cache_dir=cache_dir, workers=1)
    assert len(file_ids(cache_dir)) == recordings and not list(cache_dir.glob(".*"))


def test_stale_manifest_clears_and_rebuilds(layout, tmp_path, caplog):
    cache_dir = build_eeg_cache(layout, "train", [1, 2], cache_dir=tmp_path / "cache", workers=1)
    before = file_ids(cache_dir)
    manifest_path = cache_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["parameters"]["cqf_top_k"] = 4
    manifest_path.write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING, logger="hms_keras.data.cache"):
        build_eeg_cache(layout, "train", [1], cache_dir=cache_dir, workers=1)
    assert "stale" in caplog.text and str(cache_dir) in caplog.text
    after = file_ids(cache_dir)
    assert sorted(after) == ["1.npy"]  # 2.npy was cleared with the stale cache
    assert after["1.npy"] != before["1.npy"]  # rebuilt
    assert json.loads(manifest_path.read_text())["parameters"]["cqf_top_k"] == 3


def test_each_array_records_its_source_file(layout, tmp_path):
    cache_dir = build_eeg_cache(layout, "train", [1, 2], cache_dir=tmp_path / "cache", workers=1)
    for eeg_id in (1, 2):
        record = json.loads((cache_dir / f"{eeg_id}.source.json").read_text())
        stat = layout.eeg_path("train", eeg_id).stat()
        assert record["source"] == {"file": f"{eeg_id}.parquet", "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        assert record["version"] == cache.CACHE_VERSION and len(record["preprocessing"]) == 16


def test_a_changed_source_file_is_rebuilt_and_named(tmp_path, caplog):
    data_dir = tmp_path / "data"
    for eeg_id in (1, 2, 3):
        write_eeg(data_dir, eeg_id, seed=eeg_id, split="test")
    layout = HmsLayout(data_dir)
    cache_dir = build_eeg_cache(layout, "test", [1, 2, 3], cache_dir=tmp_path / "cache", workers=1)
    before = file_ids(cache_dir)
    old_window = EegCache(cache_dir).window(2, 0, 2000)

    replaced = write_eeg(data_dir, 2, rows=12_000, seed=99, split="test")  # same eeg_id, other data
    touched = layout.eeg_path("test", 3)
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))  # same bytes, newer
    with caplog.at_level(logging.WARNING, logger="hms_keras.data.cache"):
        build_eeg_cache(layout, "test", [1, 2, 3], cache_dir=cache_dir, workers=1)
    assert "2 source file(s) changed" in caplog.text
    assert str(replaced) in caplog.text and str(touched) in caplog.text
    assert str(layout.eeg_path("test", 1)) not in caplog.text
    after = file_ids(cache_dir)
    assert after["1.npy"] == before["1.npy"]  # unchanged source: not rewritten
    assert after["2.npy"] != before["2.npy"] and after["3.npy"] != before["3.npy"]

    signal, cqf = preprocess_eeg(read_eeg(replaced))  # (2400, 19) each
    new_window = EegCache(cache_dir).window(2, 0, 2000)
    np.testing.assert_array_equal(new_window, np.stack([signal, cqf], axis=1)[:2000].astype(np.float32))
    assert not np.array_equal(new_window, old_window)
    assert EegCache(cache_dir).num_frames(2) == 2400

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hms_keras.data.cache"):
        build_eeg_cache(layout, "test", [1, 2, 3], cache_dir=cache_dir, workers=1)
    assert caplog.text == "" and file_ids(cache_dir) == after  # up to date now


def test_a_source_that_went_bad_leaves_no_stale_array(layout, tmp_path):
    cache_dir = build_eeg_cache(layout, "train", [1, 2], cache_dir=tmp_path / "cache", workers=1)
    bad = layout.eeg_path("train", 2)
    bad.write_bytes(b"not a parquet file")
    with pytest.raises(HmsDataError, match=f"{bad}: not a readable parquet file"):
        build_eeg_cache(layout, "train", [1, 2], cache_dir=cache_dir, workers=1)
    assert sorted(file_ids(cache_dir)) == ["1.npy"]
    with pytest.raises(HmsDataError, match="not in the EEG cache"):
        EegCache(cache_dir).window(2, 0, 2000)


def test_cache_files_without_manifest_are_stale(layout, tmp_path, caplog):
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    np.save(cache_dir / "1.npy", np.zeros((2000, 2, 19), np.float16))
    with caplog.at_level(logging.WARNING, logger="hms_keras.data.cache"):
        build_eeg_cache(layout, "train", [1], cache_dir=cache_dir, workers=1)
    assert "stale" in caplog.text
    assert np.load(cache_dir / "1.npy").any()


def test_malformed_recording_stops_the_build_naming_the_file(layout, tmp_path):
    bad = layout.eeg_path("train", 2)
    frame = pd.read_parquet(bad)
    frame["Cz"] = np.nan
    frame.to_parquet(bad, index=False)
    cache_dir = tmp_path / "cache"
    with pytest.raises(HmsDataError, match=str(bad)):
        build_eeg_cache(layout, "train", [1, 2, 3], cache_dir=cache_dir, workers=1)
    assert sorted(file_ids(cache_dir)) == ["1.npy"]
    with pytest.raises(ValueError, match="split must be one of"):
        build_eeg_cache(layout, "valid", [1], cache_dir=cache_dir, workers=1)
    assert sorted(file_ids(cache_dir)) == ["1.npy"]


@pytest.mark.parametrize("workers", [1, 2])
def test_an_errors_dict_collects_every_malformed_recording_and_the_rest_is_built(tmp_path, monkeypatch, workers):
    monkeypatch.setattr(cache, "MIN_JOBS_PER_WORKER", 1)  # workers=2: the process pool even for 4 recordings
    data_dir = tmp_path / "data"
    for eeg_id in range(1, 5):
        write_eeg(data_dir, eeg_id, seed=eeg_id)
    layout = HmsLayout(data_dir)
    layout.eeg_path("train", 2).write_bytes(b"not a parquet file")
    layout.eeg_path("train", 4).unlink()
    errors = {}
    cache_dir = build_eeg_cache(layout, "train", [1, 2, 3, 4], cache_dir=tmp_path / "cache", workers=workers,
                                errors=errors)
    assert sorted(errors) == [2, 4] and all(isinstance(error, HmsDataError) for error in errors.values())
    assert str(errors[2]).startswith(f"{layout.eeg_path('train', 2)}: not a readable parquet file")
    assert str(errors[4]) == f"{layout.eeg_path('train', 4)}: file not found"
    assert sorted(file_ids(cache_dir)) == ["1.npy", "3.npy"]


# --- EegCache --------------------------------------------------------------------------------------


@pytest.fixture
def built(layout, tmp_path):
    cache_dir = build_eeg_cache(layout, "train", [1, 2, 3], cache_dir=tmp_path / "cache", workers=1)
    return layout, cache_dir


def test_window_returns_float32_frames(built):
    _, cache_dir = built
    stored = np.load(cache_dir / "2.npy")  # (2400, 2, 19) float16
    window = EegCache(cache_dir).window(2, 120, 2000)
    assert window.shape == (2000, 2, 19) and window.dtype == np.float32
    np.testing.assert_array_equal(window, stored[120:2120].astype(np.float32))


def test_window_past_the_end_reflects_signal_and_zeroes_cqf(built):
    _, cache_dir = built
    stored = np.load(cache_dir / "1.npy").astype(np.float32)  # (2200, 2, 19)
    window = EegCache(cache_dir).window(1, 2190, 15)
    np.testing.assert_array_equal(window[:10], stored[2190:])
    np.testing.assert_array_equal(window[10:, 0], stored[[2198, 2197, 2196, 2195, 2194], 0])
    np.testing.assert_array_equal(window[10:, 1], 0.0)
    with pytest.raises(HmsDataError, match="outside"):
        EegCache(cache_dir).window(1, 2200, 10)


def test_num_frames(built):
    _, cache_dir = built
    assert EegCache(cache_dir).num_frames(3) == 2600


def test_missing_eeg_id_says_how_to_build_it(built):
    layout, cache_dir = built
    with pytest.raises(HmsDataError) as error:
        EegCache(cache_dir).window(99, 0, 2000)
    message = str(error.value)
    assert "99.npy" in message
    assert f"build_eeg_cache(HmsLayout({str(layout.data_dir.resolve())!r}), 'train'" in message


def test_manifest_mismatch_or_absence_is_rejected(built):
    _, cache_dir = built
    manifest_path = cache_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["version"] = cache.CACHE_VERSION + 1
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(HmsDataError, match=r"different version.*build_eeg_cache\(HmsLayout"):
        EegCache(cache_dir)
    manifest_path.unlink()
    with pytest.raises(HmsDataError, match=r"no EEG cache manifest.*build_eeg_cache"):
        EegCache(cache_dir)


def test_pickle_and_repr_are_stable(built):
    _, cache_dir = built
    eeg_cache = EegCache(cache_dir)
    first = eeg_cache.window(3, 0, 2000)  # opens a memory map
    clone = pickle.loads(pickle.dumps(eeg_cache))
    assert repr(clone) == repr(eeg_cache) == f"EegCache({str(cache_dir)!r})"
    np.testing.assert_array_equal(clone.window(3, 0, 2000), first)


def test_open_maps_are_bounded(built, monkeypatch):
    _, cache_dir = built
    eeg_cache = EegCache(cache_dir)
    monkeypatch.setattr(eeg_cache, "MAX_OPEN_FILES", 2)
    for eeg_id in (1, 2, 3, 1):
        eeg_cache.window(eeg_id, 0, 10)
    assert list(eeg_cache._maps) == [3, 1]  # least recently used (2) closed first
