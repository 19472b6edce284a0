"""Predict every 50 s window of a whole EEG recording and write a report that opens offline.

    python -m recipes.annotate --runs runs/v5_eeg_cutmix --recording night.edf --out report/
    python -m recipes.annotate --ensemble ensembles/blend.json --recording cap.bdf --out report/ --allow-missing

The recording may be EDF, EDF+, BDF, BrainVision, EEGLAB, FIF (anything `mne.io.read_raw` opens;
pip install "hms_keras[eeg]") or a Kaggle EEG parquet. Channel names are matched to the 19
electrodes case-insensitively, with `EEG ` prefixes and reference suffixes (-REF, -LE, -AVG,
-A1, ...) dropped and T7/T8/P7/P8 read as T3/T4/T5/T6 (docs/recordings.md); other sampling
rates are resampled to 200 Hz. Writes OUT/index.html, OUT/windows.csv (start_s, end_s, centre_s
and the six class probabilities of every window) and the figures the page shows. Raw-EEG recipes
only (v5_eeg); the models see each window's central 12.8 s, and the raters' labels are about the
central 10 s.
"""

import argparse
import sys
from pathlib import Path

import hms_keras  # noqa: F401  first: applies hms_keras.runtime's settings while this process has one thread
from hms_keras.data.recordings import RecordingError, read_eeg_file, recording_channels
from hms_keras.inference import Ensemble
from hms_keras.recording_report import write_report
from hms_keras.sliding_windows import predict_prepared, prepare_file_recording
from hms_keras.tasks.v5_eeg import V5EegTask
from recipes import cli


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m recipes.annotate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--runs", help="one raw-EEG recipe's run folder, e.g. runs/v5_eeg_cutmix")
    source.add_argument("--ensemble", help="an ensemble file of recipes.ensemble whose members are raw-EEG recipes")
    parser.add_argument("--recording", required=True, help="the EEG file (EDF, BDF, BrainVision, ..., or .parquet)")
    parser.add_argument("--out", required=True, help="report folder to write (created; its files are replaced)")
    parser.add_argument("--stride", type=float, default=10.0, help="seconds between window starts (default: 10)")
    parser.add_argument("--top", type=int, default=2, help="windows drawn per class (default: 2)")
    parser.add_argument("--allow-missing", action="store_true",
                        help="predict even when electrodes are missing: they are marked bad (a warning names them)")
    parser.add_argument("--batch-size", type=int, default=32, help="windows per model call (default: 32)")
    cli.add_debug_option(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    return cli.run(annotate, parse_args(argv))


def annotate(args) -> int:
    check_inputs(args)
    recording = Path(args.recording)
    raw_uv = read_eeg_file(recording, allow_missing=args.allow_missing)  # (time, 20) µV, 200 Hz
    predictor = Ensemble.load(args.ensemble or args.runs)
    if not isinstance(predictor.task, V5EegTask):
        raise cli.UsageError(f"{args.ensemble or args.runs}: annotate works for raw-EEG (v5_eeg) recipes, not "
                             f"{type(predictor.task).__name__}")
    prepared = prepare_file_recording(predictor.task, raw_uv, recording)  # (frames, 2, 19) at 40 Hz
    windows = predict_prepared(predictor, prepared, stride_s=args.stride, batch_size=args.batch_size,
                               name=recording.name)
    channels = None if recording.suffix == ".parquet" else recording_channels(recording)
    models = f"{len(predictor.models)} model(s) of {args.ensemble or args.runs}"
    index = write_report(args.out, windows, prepared, recording=str(recording), models=models, channels=channels,
                         per_class=args.top)
    print(f"wrote {index} and {Path(args.out) / 'windows.csv'}: {len(windows)} windows, {models}")
    return 0


def check_inputs(args) -> None:
    """The cheap checks, before the recording is read or a model loaded: the numbers, --out, the
    recording file, and the run folders (or the ensemble file and the runs it names)."""
    if args.stride <= 0:
        raise cli.UsageError(f"--stride {args.stride}: must be positive")
    if args.top < 1 or args.batch_size < 1:
        raise cli.UsageError(f"--top {args.top} / --batch-size {args.batch_size}: must be at least 1")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise cli.UsageError(f"{out}: not a folder; --out names the report folder")
    if not Path(args.recording).is_file():
        raise RecordingError(f"{args.recording}: file not found; check --recording")
    cli.check_source_runs(args.runs, args.ensemble)


if __name__ == "__main__":
    sys.exit(main())
