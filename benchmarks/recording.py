"""Time and peak memory of a whole recording through `Ensemble.predict_recording`.

    .venv/bin/python benchmarks/recording.py                       # 1 h, 1 and 15 v5 models, stride 10 s
    .venv/bin/python benchmarks/recording.py --hours 3 --models 1

One hour (by default) of a synthetic session (`synthetic.recording_files.long_recording`: 1/f
background, alpha, blinks, line noise, ...) is written as a 256 Hz EDF with 19 EEG channels
under new 10-20 names (no EKG). `--models` v5 models (the real architecture,
`build_v5_eeg_model`, random weights, each saved as its own run folder) predict it in a fresh
process per count, as a user's script would: load the runs, read and resample the EDF (MNE),
preprocess it, then every 50 s window every `--stride` seconds, `--batch-size` windows a model
call. Each count starts with an empty compilation cache (`HMS_KERAS_CACHE`), as a first run
does; models after the first reuse the first one's compiled program. The table gives each
phase's seconds, the prediction's CPU seconds (all threads; on a shared machine the wall time
also holds other processes' turns), seconds per hour of EEG (read + preprocess + predict, wall)
and the process's peak RSS (VmHWM). Goal (issue 17): one model under
60 s per hour of EEG on 2 CPU cores.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if "--child" in sys.argv:  # first, while this process has one thread: hms_keras applies the runtime settings
    import hms_keras  # noqa: F401

CHILD = "--child"


def _peak_rss_gb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20  # kB -> GB
    return float("nan")


def child(recipe_dir: str, recording: str, stride_s: float, batch_size: int) -> dict:
    """Predict `recording` with every run under `recipe_dir`, in this process; phase seconds and peak RSS."""
    from hms_keras.inference import Ensemble
    from hms_keras.sliding_windows import predict_prepared
    from hms_keras.tasks.v5_eeg import V5EegTask

    timings = {}
    start = time.perf_counter()
    ensemble = Ensemble.load(recipe_dir)
    timings["load_s"] = time.perf_counter() - start
    start = time.perf_counter()
    raw_uv = V5EegTask().read_recording(recording)  # (time, 20) µV, 200 Hz
    timings["read_s"] = time.perf_counter() - start
    start = time.perf_counter()
    prepared = ensemble.task.prepare_recording(raw_uv)
    timings["preprocess_s"] = time.perf_counter() - start
    start, cpu = time.perf_counter(), time.process_time()
    windows = predict_prepared(ensemble, prepared, stride_s=stride_s, batch_size=batch_size, progress=False)
    timings["predict_s"] = time.perf_counter() - start
    timings["predict_cpu_s"] = time.process_time() - cpu  # all threads: on a shared machine, the work itself
    return {"models": len(ensemble.models), "windows": len(windows), **timings, "peak_rss_gb": _peak_rss_gb()}


def write_inputs(workdir: Path, hours: float, most_models: int) -> tuple[Path, Path]:
    """The EDF recording and a recipe folder of `most_models` runs of one random v5 model."""
    import shutil

    from hms_keras import constants, runs
    from hms_keras.data.synthetic.recording_files import NEW_10_20_NAMES, long_recording, write_recording
    from hms_keras.models import build_v5_eeg_model
    from recipes.registry import get_recipe

    seconds = int(round(hours * 3600 / 2)) * 2
    raw_uv = long_recording(seconds, seed=0)[:, : len(constants.EEG_PROBES)]  # (time, 19) µV
    recording = write_recording(workdir / "recording.edf", raw_uv, NEW_10_20_NAMES[:19], sampling_rate_hz=256)
    del raw_uv
    model_file = workdir / "v5.keras"
    build_v5_eeg_model().save(model_file)
    recipe = get_recipe("v5_eeg_cutmix")
    recipe_dir = workdir / "runs" / "v5_eeg_cutmix"
    for index in range(most_models):
        fold, seed = index % 5, index // 5
        run_dir = runs.run_dir(recipe_dir, fold, seed)
        run_dir.mkdir(parents=True)
        shutil.copyfile(model_file, run_dir / runs.MODEL_FILE)
        runs.write_description(run_dir, runs.describe(recipe, fold, seed))
    return recording, recipe_dir


def subset(recipe_dir: Path, count: int, workdir: Path) -> Path:
    """A recipe folder holding the first `count` runs of `recipe_dir` (symlinks)."""
    from hms_keras import runs

    target = workdir / f"runs_{count}" / recipe_dir.name
    for run_dir in runs.finished_runs(recipe_dir)[:count]:
        link = target / run_dir.parent.name / run_dir.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(run_dir, target_is_directory=True)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--models", type=int, nargs="+", default=[1, 15])
    parser.add_argument("--stride", type=float, default=10.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(CHILD, nargs=2, metavar=("RECIPE_DIR", "RECORDING"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.stride, args.batch_size)))
        return
    with tempfile.TemporaryDirectory(prefix="recording_benchmark_") as folder:
        workdir = Path(folder)
        start = time.perf_counter()
        recording, recipe_dir = write_inputs(workdir, args.hours, max(args.models))
        print(f"{args.hours:g} h of 19-channel EEG at 256 Hz as EDF ({recording.stat().st_size / 2**20:.0f} MB) and "
              f"{max(args.models)} run(s) written in {time.perf_counter() - start:.0f} s; stride {args.stride:g} s, "
              f"batch {args.batch_size}", flush=True)
        print(f"{'models':>6} {'windows':>7} {'load s':>7} {'read s':>7} {'prep s':>7} {'predict s':>9} "
              f"{'predict CPU s':>13} {'s/hour':>7} {'peak RSS GB':>11}", flush=True)
        for count in args.models:
            command = [sys.executable, __file__, CHILD, str(subset(recipe_dir, count, workdir)), str(recording),
                       "--stride", str(args.stride), "--batch-size", str(args.batch_size)]
            cold_cache = {**os.environ, "HMS_KERAS_CACHE": str(workdir / f"cache_{count}")}  # compiles at least once
            result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True,
                                               env=cold_cache).stdout)
            total = result["read_s"] + result["preprocess_s"] + result["predict_s"]
            print(f"{result['models']:>6} {result['windows']:>7} {result['load_s']:>7.1f} {result['read_s']:>7.1f} "
                  f"{result['preprocess_s']:>7.1f} {result['predict_s']:>9.1f} {result['predict_cpu_s']:>13.1f} "
                  f"{total / args.hours:>7.1f} "
                  f"{result['peak_rss_gb']:>11.2f}", flush=True)


if __name__ == "__main__":
    main()
