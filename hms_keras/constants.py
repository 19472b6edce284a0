"""Fixed facts of the HMS task: classes, electrodes, montage, sampling rates, window geometry.

Every number here is a property of the Kaggle data or of the v5 reference system
(`docs/hms_data.md`, `docs/v5_reference.md`); nothing is tunable.
"""

from decimal import ROUND_HALF_UP, Decimal

# --- classes and votes -------------------------------------------------------------------
CLASSES = ("seizure", "lpd", "gpd", "lrda", "grda", "other")
NUM_CLASSES = len(CLASSES)
VOTE_COLUMNS = tuple(f"{name}_vote" for name in CLASSES)
# `expert_consensus` spelling in train.csv, index-aligned with CLASSES.
CONSENSUS_NAMES = ("Seizure", "LPD", "GPD", "LRDA", "GRDA", "Other")
# Most raters any label row has; a row's weight is its vote total / MAX_VOTES.
MAX_VOTES = 28

# --- EEG parquet -------------------------------------------------------------------------
# Column order of every EEG parquet (old 10-20 names: T3/T4/T5/T6 = T7/T8/P7/P8), microvolts.
EEG_COLUMNS = (
    "Fp1", "F3", "C3", "P3", "F7", "T3", "T5", "O1", "Fz", "Cz", "Pz",
    "Fp2", "F4", "C4", "P4", "F8", "T4", "T6", "O2", "EKG",
)
EEG_PROBES = EEG_COLUMNS[:19]  # the 19 scalp electrodes; EKG is dropped after preprocessing
RAW_SAMPLING_RATE_HZ = 200
SAMPLING_RATE_HZ = 40  # after the v5 5-sample block mean
DOWNSAMPLE_FACTOR = RAW_SAMPLING_RATE_HZ // SAMPLING_RATE_HZ
REFERENCE_VOLTAGE_UV = 1000.0  # raw µV / 1000 -> mV, the v5 model's input unit

# --- v5 window geometry, in 40 Hz frames ---------------------------------------------------
WINDOW_SECONDS = 50
WINDOW_FRAMES = WINDOW_SECONDS * SAMPLING_RATE_HZ  # 2000
PADDED_FRAMES = 2048  # window right-padded to a multiple of 2048 (signal reflect, CQF zeros)
CROP_START = 744  # model sees frames [744, 1256): 12.8 s centred on the 50 s window
CROP_FRAMES = 512

# --- double-banana bipolar montage -----------------------------------------------------------
# 18 (anode, cathode) pairs in the model's channel order: LL, LP, Z, RP, RL.
BIPOLAR_PAIRS = (
    ("Fp1", "F7"), ("F7", "T3"), ("T3", "T5"), ("T5", "O1"),  # LL
    ("Fp1", "F3"), ("F3", "C3"), ("C3", "P3"), ("P3", "O1"),  # LP
    ("Fz", "Cz"), ("Cz", "Pz"),  # Z
    ("Fp2", "F4"), ("F4", "C4"), ("C4", "P4"), ("P4", "O2"),  # RP
    ("Fp2", "F8"), ("F8", "T4"), ("T4", "T6"), ("T6", "O2"),  # RL
)
NUM_BIPOLAR = len(BIPOLAR_PAIRS)
# Indices into BIPOLAR_PAIRS of the two 10-channel hemisphere stacks; row i of the left stack
# mirrors row i of the right stack (Fp1-F7 <-> Fp2-F8, ...), the Z chain appears in both.
LEFT_STACK = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9)  # LL0-3, LP0-3, Z0, Z1
RIGHT_STACK = (14, 15, 16, 17, 10, 11, 12, 13, 8, 9)  # RL0-3, RP0-3, Z0, Z1
# Left/right mirror pairs of probes; Fz, Cz, Pz map to themselves.
MIRROR_PROBE_PAIRS = (
    ("Fp1", "Fp2"), ("F3", "F4"), ("C3", "C4"), ("P3", "P4"),
    ("F7", "F8"), ("T3", "T4"), ("T5", "T6"), ("O1", "O2"),
)
MIDLINE_PROBES = ("Fz", "Cz", "Pz")

# --- 0.5 Hz high-pass biquad at 40 Hz (torchaudio highpass_biquad, Q=0.707), normalised -----
HIGHPASS_B = (0.945969, -1.891939, 0.945969)
HIGHPASS_A = (1.0, -1.889018, 0.894859)
HIGHPASS_CLIP_MV = 1.0  # the filtered bipolar signal is clipped to [-1, 1] mV

# --- Kaggle spectrograms ---------------------------------------------------------------------
SPECTROGRAM_CHAINS = ("LL", "RL", "LP", "RP")  # file order of the 4 x 100 columns
SPECTROGRAM_BINS = 100
# Bin k is (k + 3) * 200 / 1024 Hz: 0.59 .. 19.92 Hz.
SPECTROGRAM_FREQUENCIES_HZ = tuple((k + 3) * 200 / 1024 for k in range(SPECTROGRAM_BINS))


def _spectrogram_column(chain: str, freq_hz: float) -> str:
    """Kaggle's name of one spectrogram column: chain, `_`, the frequency in Hz rounded to 2 decimals
    half-up, trailing zeros dropped (`LL_3.13` for 3.125 Hz, `LL_4.1`, `LL_12.5`). Python's round()
    would give `LL_3.12`. Decimal(freq_hz) is exact: every bin frequency is a binary fraction."""
    rounded = Decimal(freq_hz).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    return f"{chain}_{rounded.normalize():f}"


# File order of the 400 power columns (after `time`): 4 chains x 100 bins.
SPECTROGRAM_COLUMNS = tuple(
    _spectrogram_column(chain, freq) for chain in SPECTROGRAM_CHAINS for freq in SPECTROGRAM_FREQUENCIES_HZ
)
SPECTROGRAM_SECONDS_PER_ROW = 2
SPECTROGRAM_WINDOW_ROWS = 300  # 600 s
# Bipolar pairs averaged into each spectrogram chain (indices into BIPOLAR_PAIRS).
SPECTROGRAM_CHAIN_PAIRS = {"LL": (0, 1, 2, 3), "RL": (14, 15, 16, 17), "LP": (4, 5, 6, 7), "RP": (10, 11, 12, 13)}
