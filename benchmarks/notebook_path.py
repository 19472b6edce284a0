"""Peak memory and step time of the v5 model used from Python, as a notebook would, per import order.

    .venv/bin/python benchmarks/notebook_path.py                    # v5, batch 32, 3 steps, the default orders
    .venv/bin/python benchmarks/notebook_path.py --orders settings_off jax_started --steps 2

Each import order runs in a fresh `python -c` subprocess, one after another: the order's first
lines, then `benchmarks/model_step.py`'s `measure` (build, compile and time the model's train and
predict steps on a random batch, public Keras and hms_keras API only). The orders:

- settings_off: `import hms_keras` with `HMS_KERAS_RUNTIME_SETTINGS=0`, i.e. no runtime settings
  at all, as every notebook ran before `hms_keras.runtime` existed.
- others_first: `import numpy, pandas, keras`, then `import hms_keras`: the settings applied on
  import, after other libraries have started threads (pandas' leaves glibc a second malloc arena).
- hms_keras_first: `import hms_keras` as the first import, as documented: both settings bind fully.
- jax_started (not run by default): a JAX computation before `import hms_keras`, too late for the
  XLA flag (hms_keras warns).

Reported per order: the first train step (trace + compile + step, s), train EEG/s (batch / median
step), minor page faults a train step, inference EEG/s, peak RSS (GB), the malloc arenas and the
XLA flag's state at the end. A child whose RSS passes `--max-rss-gb`, or that leaves the machine less
than `--min-available-gb` of memory, is killed (reported as such), so it cannot run the machine out.
"""

import argparse
import json
import os
import subprocess
import sys
import time

BENCHMARKS = os.path.dirname(os.path.abspath(__file__))
MODEL = "v5_eeg_dual_effnet1d"

ORDERS = {  # name -> (environment additions, the first lines of the notebook)
    "settings_off": ({"HMS_KERAS_RUNTIME_SETTINGS": "0"}, "import hms_keras"),
    "others_first": ({}, "import numpy, pandas, keras\nimport hms_keras"),
    "hms_keras_first": ({}, "import hms_keras"),
    "jax_started": ({}, "import jax\njax.numpy.ones(1).block_until_ready()\nimport hms_keras"),
}
DEFAULT_ORDERS = ("settings_off", "others_first", "hms_keras_first")

MEASURE = """
import json, os, sys, warnings
sys.path.insert(0, {benchmarks!r})
import model_step
row = model_step.measure({model!r}, {batch_size}, {steps})
row["malloc_arenas"] = hms_keras.runtime.malloc_arenas()
row["xla_flag_in_env"] = hms_keras.runtime.XLA_CPU_FLAG in os.environ.get("XLA_FLAGS", "")
print(json.dumps(row), flush=True)
"""


def _proc_gb(path: str, field: str) -> float:
    """A `field: <n> kB` line of a /proc file, in GB (0 where the file or field is missing)."""
    try:
        with open(path) as lines:
            for line in lines:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 2**20  # KiB -> GiB
    except OSError:
        pass
    return 0.0


def run_order(name: str, args) -> dict:
    """Run one import order in a fresh interpreter; returns `measure`'s dict plus the order's code,
    or an error (the exit status, or the RSS at which it was killed)."""
    extra_env, prelude = ORDERS[name]
    code = prelude + MEASURE.format(benchmarks=BENCHMARKS, model=MODEL, batch_size=args.batch_size, steps=args.steps)
    env = dict(os.environ, KERAS_BACKEND="jax", **extra_env)
    for key in ("XLA_FLAGS", "HMS_KERAS_RUNTIME_SETTINGS"):  # only what the order sets
        if key not in extra_env:
            env.pop(key, None)
    child = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    peak = 0.0
    while child.poll() is None:
        peak = max(peak, _proc_gb(f"/proc/{child.pid}/status", "VmRSS"))
        available = _proc_gb("/proc/meminfo", "MemAvailable")
        if peak > args.max_rss_gb or available < args.min_available_gb:
            child.kill()
            child.communicate()
            why = f"killed at {peak:.1f} GB RSS, {available:.1f} GB left available on the machine"
            return {"order": name, "code": prelude, "error": why}
        time.sleep(0.5)
    stdout, stderr = child.communicate()
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    warned = [line.strip() for line in stderr.splitlines() if "UserWarning: hms_keras" in line]
    if child.returncode != 0 or not lines:
        messages = [line for line in stderr.splitlines() if line.strip()]
        return {"order": name, "code": prelude, "error": f"exit {child.returncode}: {messages[-3:]}"}
    return dict(json.loads(lines[-1]), order=name, code=prelude, warnings=warned)


def print_table(rows, batch_size):
    print(f"\n{MODEL}, batch {batch_size}")
    print(
        "| order | first train step (s) | train EEG/s | train s/step | page faults/step | inference EEG/s "
        "| peak RSS (GB) | malloc arenas | load |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        if "error" in row:
            print(f"| {row['order']} | failed: {row['error']} | | | | | | | |")
            continue
        print(
            f"| {row['order']} | {row['train_first_s']:.0f} | {row['train_per_s']:.2f} | "
            f"{batch_size / row['train_per_s']:.1f} | {row['train_page_faults_per_step']} | "
            f"{row['predict_per_s']:.1f} | {row['peak_rss_gb']:.1f} | {row['malloc_arenas']} | "
            f"{row['load_avg_1min']:.1f} |"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", nargs="+", choices=tuple(ORDERS), default=list(DEFAULT_ORDERS))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3, help="timed train steps after the first (compile) step")
    parser.add_argument("--max-rss-gb", type=float, default=20.0, help="kill a child whose RSS passes this")
    parser.add_argument(
        "--min-available-gb", type=float, default=1.0, help="kill a child when the machine has less memory left"
    )
    args = parser.parse_args()
    rows = []
    for name in args.orders:
        row = run_order(name, args)
        print(json.dumps(row), flush=True)
        rows.append(row)
    print_table(rows, args.batch_size)


if __name__ == "__main__":
    main()
