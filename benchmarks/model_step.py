"""Training and inference speed, compile time and peak memory of the models, per Keras backend.

    .venv/bin/python benchmarks/model_step.py                       # jax, tensorflow, torch; both models
    .venv/bin/python benchmarks/model_step.py --backend jax --models v5_eeg_dual_effnet1d --steps 3
    .venv/bin/python benchmarks/model_step.py --untuned             # without the CPU runtime settings
    .venv/bin/python benchmarks/model_step.py --backend jax --models v5_eeg_dual_effnet1d \
        --precision float32 mixed_bfloat16                          # bfloat16 against float32, one run

Each backend runs in its own subprocess (so peak RSS is per backend) and reports, for a random
batch: the first `train_on_batch` (trace + compile + one step, seconds; "compile" is it minus a
steady step), the median time of the next `--steps` compiled train steps (EEG/s = batch /
median), the same for `predict_on_batch`,
and the process's peak RSS (GB, build and compile included). Training is compiled the way
`hms_keras.training` compiles it: `TorchAdamW` (AdamW, lr 1e-3, eps 1e-4, weight decay 1e-5),
the model's loss, `jit_compile` at Keras' default unless `--jit-compile` says otherwise.
`--precision` sets Keras' dtype policy before the model is built (`mixed_bfloat16`: bfloat16
computation, float32 variables, logits and loss, as `train.mixed_precision` does in training).
Each row names the devices it ran on (`hms_keras.devices.device_note`: backend, device kind and
count, and for a CPU its model and whether it has bfloat16 instructions).
Timings on a shared machine are noisy: the load average is printed with each row; run it more than once.

CPU runtime settings (`hms_keras.runtime`; on unless `--untuned`, which sets `HMS_KERAS_RUNTIME_SETTINGS=0`):
each subprocess imports hms_keras before numpy or Keras, as `recipes.train` and `recipes.predict` do:
- `XLA_FLAGS=--xla_cpu_enable_concurrency_optimized_scheduler=false`: XLA:CPU's default scheduler
  orders the program for parallelism and keeps most activations alive at once, which undoes the
  model's rematerialisation (v5 at batch 32: ~19 GB peak RSS with it, ~4 GB without it).
- glibc `mallopt(M_ARENA_MAX=1, M_MMAP_MAX=0, M_TRIM_THRESHOLD=-1)`: large allocations come from
  one heap that is kept and reused instead of fresh `mmap`s returned after every step, so a step
  no longer page-faults its working set in again (v5 at batch 32: ~36 s -> ~11-12.5 s a step).

Wall-clock EEG/s on a shared machine depend on the load; the CPU seconds (all threads, user +
system) a train step costs are the steadier figure to compare.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

if "--child" in sys.argv:  # first, while this process has one thread: hms_keras applies the runtime settings
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import hms_keras  # noqa: F401

import numpy as np  # noqa: E402

BACKENDS = ("jax", "tensorflow", "torch")
MODEL_NAMES = ("v5_eeg_dual_effnet1d", "spec_resnet34d")
PRECISIONS = ("float32", "mixed_bfloat16")


def random_batch(model_name, batch_size, rng):
    """A random `(inputs, targets)` batch in the layout of `model_name`'s task."""
    if model_name == "v5_eeg_dual_effnet1d":
        from hms_keras.target_layout import pack

        inputs = {
            "eeg": rng.uniform(-1, 1, (batch_size, 512, 18)).astype("float32"),  # (batch, time, channels) mV
            "mask": rng.uniform(0.3, 1, (batch_size, 512, 18)).astype("float32"),
        }
        probs = rng.dirichlet(np.ones(6), (batch_size, 2))  # (batch, heads, classes)
        weight = rng.uniform(0.1, 1, (batch_size, 2))  # (batch, heads)
        return inputs, pack(probs, weight)  # threshold 0
    inputs = {"spectrogram": rng.standard_normal((batch_size, 400, 300, 1)).astype("float32")}
    return inputs, rng.dirichlet(np.ones(6), batch_size).astype("float32")


def measure(model_name, batch_size, steps, jit_compile="auto", precision="float32"):
    """Build, compile and time one model in this process; returns a dict of figures."""
    import keras

    from hms_keras.devices import device_note
    from hms_keras.losses import KLDivergenceFromLogits, VoteWeightedKLDivergence
    from hms_keras.models import MODELS
    from hms_keras.optimizers import TorchAdamW

    keras.utils.set_random_seed(0)
    keras.config.set_dtype_policy(precision)
    started = time.perf_counter()
    model = MODELS[model_name]()
    build_s = time.perf_counter() - started
    loss = VoteWeightedKLDivergence() if model_name == "v5_eeg_dual_effnet1d" else KLDivergenceFromLogits()
    model.compile(
        optimizer=TorchAdamW(learning_rate=1e-3, weight_decay=1e-5, epsilon=1e-4),
        loss=loss,
        jit_compile={"auto": "auto", "on": True, "off": False}[jit_compile],
    )
    inputs, targets = random_batch(model_name, batch_size, np.random.default_rng(0))

    started = time.perf_counter()
    first_loss = float(model.train_on_batch(inputs, targets))
    train_first_s = time.perf_counter() - started
    train_s, train_cpu_s, train_faults = [], [], []
    for _ in range(steps):
        started, started_cpu = time.perf_counter(), time.process_time()
        started_faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        last_loss = float(model.train_on_batch(inputs, targets))
        train_s.append(time.perf_counter() - started)
        train_cpu_s.append(time.process_time() - started_cpu)
        train_faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - started_faults)

    started = time.perf_counter()
    np.asarray(model.predict_on_batch(inputs))
    predict_first_s = time.perf_counter() - started
    predict_s = []
    for _ in range(max(steps, 3)):
        started = time.perf_counter()
        np.asarray(model.predict_on_batch(inputs))
        predict_s.append(time.perf_counter() - started)
    return {
        "backend": keras.backend.backend(),
        "device": device_note(),
        "precision": precision,
        "model": model_name,
        "batch_size": batch_size,
        "build_s": build_s,
        "train_first_s": train_first_s,
        "train_per_s": batch_size / float(np.median(train_s)),
        "train_compile_s": train_first_s - float(np.median(train_s)),  # trace + XLA compile
        "train_cpu_s_per_step": float(np.median(train_cpu_s)),
        "train_page_faults_per_step": int(np.median(train_faults)),  # minor faults: memory mapped in afresh
        "predict_first_s": predict_first_s,
        "predict_per_s": batch_size / float(np.median(predict_s)),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,  # KiB -> GiB
        "loss_first_last": (first_loss, last_loss),
        "load_avg_1min": os.getloadavg()[0],
    }


def run_child(backend, model_name, precision, args):
    """Run `measure` for one (backend, model, precision) in a fresh subprocess; returns its dict or an error."""
    env = dict(os.environ, KERAS_BACKEND=backend)
    if args.untuned:
        env["HMS_KERAS_RUNTIME_SETTINGS"] = "0"
    command = [
        sys.executable,
        __file__,
        "--child",
        "--models",
        model_name,
        "--batch-size",
        str(args.batch_size),
        "--steps",
        str(args.steps),
        "--jit-compile",
        args.jit_compile,
        "--precision",
        precision,
    ] + (["--untuned"] if args.untuned else [])
    done = subprocess.run(command, check=False, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        # the exit status (negative: killed by that signal, e.g. -9 by the kernel's OOM killer) and the
        # last stderr lines that are not TensorFlow/XLA start-up logs
        logs = ("I0000", "W0000", "WARNING: All log messages")
        messages = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith(logs)]
        return {"backend": backend, "model": model_name, "precision": precision,
                "error": f"exit {done.returncode}: {messages[-3:]}"}
    return json.loads(lines[-1])


def print_table(rows, batch_size, tuned):
    print(f"\nbatch {batch_size}, CPU runtime settings {'on' if tuned else 'off'}")
    for device in sorted({row["device"] for row in rows if "device" in row}):
        print(f"device: {device}")
    print(
        "| model | backend | precision | first train step (s) | compile (s) | train EEG/s | train CPU s/step "
        "| inference EEG/s | peak RSS (GB) | load |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        if "error" in row:
            print(f"| {row['model']} | {row['backend']} | {row['precision']} | failed: {row['error']} | | | | | | |")
            continue
        print(
            f"| {row['model']} | {row['backend']} | {row['precision']} | {row['train_first_s']:.0f} | "
            f"{row['train_compile_s']:.0f} | {row['train_per_s']:.2f} | "
            f"{row['train_cpu_s_per_step']:.1f} | {row['predict_per_s']:.1f} | {row['peak_rss_gb']:.1f} | "
            f"{row['load_avg_1min']:.1f} |"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=BACKENDS + ("all",), default="all")
    parser.add_argument("--models", nargs="+", choices=MODEL_NAMES, default=list(MODEL_NAMES))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5, help="timed steps after the first (compile) step")
    parser.add_argument(
        "--jit-compile", choices=("auto", "on", "off"), default="auto", help="model.compile(jit_compile=...)"
    )
    parser.add_argument("--precision", nargs="+", choices=PRECISIONS, default=["float32"],
                        help="Keras dtype policies to measure, each in its own process (default float32)")
    parser.add_argument("--untuned", action="store_true", help="do not apply the CPU runtime settings")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # the CPU runtime settings were applied at import
        figures = measure(args.models[0], args.batch_size, args.steps, args.jit_compile, args.precision[0])
        print(json.dumps(figures), flush=True)
        return
    backends = BACKENDS if args.backend == "all" else (args.backend,)
    rows = []
    for model_name in args.models:
        for backend in backends:
            for precision in args.precision:
                row = run_child(backend, model_name, precision, args)
                print(json.dumps(row), flush=True)
                rows.append(row)
    print_table(rows, args.batch_size, tuned=not args.untuned)


if __name__ == "__main__":
    main()
