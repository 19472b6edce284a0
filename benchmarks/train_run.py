"""Peak memory and time of the path users run: `hms_keras.training.train_recipe`, one epoch.

    .venv/bin/python benchmarks/train_run.py                     # v5, batch 32, 250-EEG embedded dataset
    .venv/bin/python benchmarks/train_run.py --batch-size 64 --eegs 400

A fresh subprocess trains fold 0 / seed 0 of the v5 recipe for one epoch exactly as
`python -m recipes.train` does (the Grain pipeline with augmentation and cutmix, `fit`, the
validation score after the epoch, the epoch checkpoint, out-of-fold prediction of every
validation row, the run folder), on the embedded synthetic dataset (generated first in another
process; the preprocessing cache is built by the child's worker processes, whose memory is not
the child's). A thread samples the child's resident set
every 0.25 s; the table gives its peak in each phase (compile + first step, the remaining train
steps, validation and out-of-fold prediction) and the process's peak RSS (VmHWM). Compare with
`benchmarks/model_step.py`, which times a bare compiled step on a random batch.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

if "--child" in sys.argv:  # first, while this process has one thread: hms_keras applies the runtime settings
    import hms_keras  # noqa: F401

CHILD = "--child"


def _status_gb(field: str) -> float:
    """A `/proc/self/status` memory field (VmRSS, VmHWM) in GB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 2**20  # kB -> GB
    return float("nan")


def child(batch_size: int, eegs: int, workdir: str) -> dict:
    """Train one epoch in this process; returns the peak RSS of each phase (GB) and timings."""
    import dataclasses
    import threading

    import keras

    from hms_keras import training
    from recipes.registry import get_recipe

    recipe = get_recipe("v5_eeg_cutmix")
    recipe = dataclasses.replace(
        recipe,
        name="train_run_benchmark",
        data=dataclasses.replace(recipe.data, synthetic_eegs=eegs),
        train=dataclasses.replace(recipe.train, epochs=1, batch_size=batch_size),
        folds=(0,),
        seeds=(0,),
    )
    phase = ["setup"]
    peaks: dict[str, float] = {}
    timeline: list[tuple[float, str, float]] = []  # (seconds, phase, RSS GB) every 5 s
    times: dict[str, float] = {}
    done = threading.Event()

    def sample():
        while not done.is_set():
            rss = _status_gb("VmRSS")
            peaks[phase[0]] = max(peaks.get(phase[0], 0.0), rss)
            if not timeline or time.time() - started - timeline[-1][0] >= 5:
                timeline.append((round(time.time() - started, 1), phase[0], round(rss, 2)))
            time.sleep(0.25)

    class Phases(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            times["steps"] = batch + 1
            if batch == 0:
                phase[0], times["fit_start"] = "compile + first step", time.time()
            elif batch == 1:
                phase[0], times["first_step_end"] = "train steps", time.time()

        def on_epoch_end(self, epoch, logs=None):
            phase[0], times["steps_end"] = "validation + out-of-fold", time.time()

    original_fit = keras.Model.fit

    def fit_with_phases(model, *args, callbacks=(), **kwargs):  # the real fit, with a phase marker first
        return original_fit(model, *args, callbacks=[Phases(), *callbacks], **kwargs)

    keras.Model.fit = fit_with_phases
    started = time.time()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    training.train_recipe(recipe, workdir)
    done.set()
    sampler.join()
    steps = times["steps"]
    return {
        "batch_size": batch_size,
        "eegs": eegs,
        "steps": steps,
        "first_step_s": times["first_step_end"] - times["fit_start"],
        "step_s": (times["steps_end"] - times["first_step_end"]) / max(steps - 1, 1),
        "total_s": time.time() - started,
        "peaks_gb": peaks,
        "timeline": timeline,
        "peak_rss_gb": _status_gb("VmHWM"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eegs", type=int, default=250, help="size of the embedded synthetic dataset")
    parser.add_argument("--timeline", action="store_true", help="also print the RSS every 5 s")
    parser.add_argument(CHILD, action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args.batch_size, args.eegs, args.workdir)))
        return
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    generate = f"from hms_keras.data.synthetic import embedded_data_dir; embedded_data_dir({args.eegs})"
    subprocess.run([sys.executable, "-c", generate], check=True, cwd=repo)  # outside the measured process
    with tempfile.TemporaryDirectory() as workdir:
        command = [sys.executable, __file__, CHILD, "--batch-size", str(args.batch_size), "--eegs", str(args.eegs),
                   "--workdir", workdir]
        result = subprocess.run(command, capture_output=True, text=True, cwd=repo)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    if result.returncode or not lines:
        sys.exit(f"the training child failed (exit {result.returncode}): {result.stderr.strip().splitlines()[-5:]}")
    row = json.loads(lines[-1][len("RESULT "):])
    print(f"v5 train_recipe, 1 epoch of {row['steps']} steps at batch {row['batch_size']}, {row['eegs']} EEGs "
          f"(load {os.getloadavg()[0]:.1f})")
    print(f"first step {row['first_step_s']:.1f} s, then {row['step_s']:.1f} s/step "
          f"({row['batch_size'] / row['step_s']:.2f} EEG/s); whole run {row['total_s']:.0f} s")
    for phase, peak in row["peaks_gb"].items():
        print(f"  peak RSS during {phase:28s} {peak:5.1f} GB")
    print(f"  peak RSS of the process (VmHWM)       {row['peak_rss_gb']:5.1f} GB")
    if args.timeline:
        for seconds, phase, rss in row["timeline"]:
            print(f"  {seconds:7.1f} s  {rss:5.2f} GB  {phase}")


if __name__ == "__main__":
    main()
