"""Print how far this package is from the original PyTorch v5 code, stage by stage.

    python benchmarks/fidelity.py                       # the subset in tests/data/v5_original
    python benchmarks/fidelity.py --fixture DIR         # a full golden fixture (same layout)

For every recording in `<fixture>/train_eegs/`: the largest absolute difference between
`preprocess_eeg` and the original's cached arrays (`original_preprocessed/`), signal (mV) and
channel quality factor. Then, under each Keras backend in a fresh process, the largest absolute
difference between the converted checkpoint's logits on the golden windows (through this
package's front end) and the original's. The fixture's README says how it was made.
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from hms_keras import constants
from hms_keras.data.hms import read_eeg
from hms_keras.data.preprocess import preprocess_eeg

REPO = Path(__file__).resolve().parents[1]

LOGITS = """
import sys
import keras
import numpy as np
from hms_keras.convert import convert_v5_checkpoint
from hms_keras.data.transforms import front_end
fixture = sys.argv[1]
golden = np.load(f"{fixture}/golden.npz")
inputs = [front_end(signal, cqf) for signal, cqf in zip(golden["eeg"], golden["cqf"], strict=True)]
batch = {name: np.stack([item[name] for item in inputs]) for name in ("eeg", "mask")}
logits = keras.ops.convert_to_numpy(convert_v5_checkpoint(f"{fixture}/model.pth").predict_on_batch(batch))
print("LOGITS", float(np.abs(logits - golden["logits"]).max()), float(np.abs(golden["logits"]).max()))
"""


def preprocessing_table(fixture: Path) -> None:
    print(f"{'eeg_id':>12} {'frames':>7} {'signal max |diff| (mV)':>24} {'CQF max |diff|':>16}")
    for path in sorted((fixture / "train_eegs").glob("*.parquet")):
        signal, cqf = preprocess_eeg(read_eeg(path))
        original_signal = np.load(fixture / "original_preprocessed" / f"{path.stem}_eeg.npy")
        original_cqf = np.load(fixture / "original_preprocessed" / f"{path.stem}_cqf.npy")
        signal_diff = np.abs(signal.astype(np.float32) - original_signal[:, : len(constants.EEG_PROBES)]).max()
        cqf_diff = np.abs(cqf.astype(np.float32) - original_cqf).max()
        print(f"{path.stem:>12} {len(signal):>7} {signal_diff:>24.2e} {cqf_diff:>16.2e}")


def logits_table(fixture: Path) -> None:
    print(f"\n{'backend':>12} {'logits max |diff|':>18} {'max |logit|':>12}")
    for backend in ("jax", "tensorflow", "torch"):
        result = subprocess.run(
            [sys.executable, "-c", LOGITS, str(fixture)], capture_output=True, text=True, cwd=REPO,
            env={**os.environ, "KERAS_BACKEND": backend},
        )
        lines = [line.split() for line in result.stdout.splitlines() if line.startswith("LOGITS")]
        if result.returncode or not lines:
            print(f"{backend:>12} failed: {result.stderr.strip().splitlines()[-1:]}")
            continue
        _, difference, largest = lines[-1]
        print(f"{backend:>12} {float(difference):>18.2e} {float(largest):>12.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fixture", type=Path, default=REPO / "tests" / "data" / "v5_original")
    fixture = parser.parse_args().fixture
    preprocessing_table(fixture)
    logits_table(fixture)


if __name__ == "__main__":
    main()
