"""A synthetic HMS dataset in the exact Kaggle layout: the embedded default every recipe and test uses.

`generate_dataset(out_dir, ...)` (writer.py) writes what Kaggle ships (docs/hms_data.md):

    train.csv  test.csv  sample_submission.csv
    train_eegs/<eeg_id>.parquet                 (time, 20) float32 µV at 200 Hz, EEG_COLUMNS
    train_spectrograms/<spectrogram_id>.parquet  `time` int64 (1, 3, 5, ... s) + 400 float32 columns
    test_eegs/, test_spectrograms/              the same for the test split (50 s EEGs, 300-row spectrograms)

How it is made. Data are planned per *session* (plan.py): one continuous recording of one patient,
from which one spectrogram and 1-4 EEG files (excerpts) are cut, like Kaggle's consolidated
recordings. A session's timeline is a list of `Segment`s, each carrying one activity pattern:

- seizure: sharp-contoured rhythm at 3.5-7.5 Hz (100-220 µV) whose frequency (±25-40 %) and
  amplitude evolve with a 10-25 s period, focal on one hemisphere (60 %) or bilateral;
- LPD / GPD: periodic sharp discharges (sharp wave + slow wave, 150-300 µV, GPD sometimes
  triphasic) every 0.5-1.25 s, on one hemisphere / on both;
- LRDA / GRDA: rhythmic delta at 1-2.5 Hz (80-200 µV) with a steady frequency, on one hemisphere /
  on both;
- other: background only, polymorphic (broadband) delta, sporadic sharp waves or muscle bursts.
Lateralized patterns pick left or right at random.

A pattern is one waveform times a spatial field over the 19 scalp electrodes (a Gaussian around a
focus, elongated front to back; a generalized field is the focus and its mirror image, frontally
predominant; each electrode scaled by 0.6-1), so it survives the bipolar montage. Under every
pattern runs a background of 1/f noise (8-20 µV per electrode plus a common part that the montage
cancels), a posterior alpha rhythm (8.5-11 Hz, strongest on O1/O2) in 60 % of sessions, and
nuisances: eye blinks (Fp1/Fp2), EKG leakage and an EKG channel with a 1.5-6 mV R wave, 60 Hz line
noise, a flat or very noisy channel, rare huge outliers and interior NaN gaps. All of it is rendered
by `render_session` (render.py).

Each labelled EEG part is an *event*: one segment whose class mix (a dominant class plus rater
disagreement) gives the votes of all its label rows, so overlapping windows share their votes. The
dominant pattern fills the whole event, so every labelled 50 s window shows it throughout.
Spectrograms are computed from the session signal the way Kaggle's are (`render._spectrogram`).
EEG values are stored in 1/16 µV steps (like an ADC); parquet files are zstd-compressed (writer.py).

Everything is a function of the seed: the same seed gives byte-identical CSVs and identical arrays.
"""

from hms_keras.data.synthetic.plan import REAL_CONSENSUS_SHARES, EegFile, Segment, Session
from hms_keras.data.synthetic.render import render_session
from hms_keras.data.synthetic.writer import (
    DEFAULT_EMBEDDED_EEGS,
    SYNTHETIC_VERSION,
    embedded_data_dir,
    generate_dataset,
    main,
)

__all__ = [
    "DEFAULT_EMBEDDED_EEGS",
    "REAL_CONSENSUS_SHARES",
    "SYNTHETIC_VERSION",
    "EegFile",
    "Segment",
    "Session",
    "embedded_data_dir",
    "generate_dataset",
    "main",
    "render_session",
]
