"""Raw EEG -> the v5 model's 40 Hz signal (mV) and channel quality factor; Kaggle spectrogram images.

`preprocess_eeg` is the v5 reference's offline preprocessing (`docs/v5_reference.md` §1.2),
run once per recording; `channel_quality_factor` is its CQF (§1.3). `spectrogram_window` and
`normalize_spectrogram` turn a Kaggle spectrogram into the ResNet34d baseline's input image
(`docs/spectrogram_baseline.md`, "Input").

Layouts: arrays are time-major, `(time, channels)`; raw EEG is 200 Hz µV with the 20 columns of
`constants.EEG_COLUMNS`; preprocessed EEG is 40 Hz "frames" in mV with the 19 `constants.EEG_PROBES`.
Raw EEG keeps the parquet file's two kinds of missing sample apart, because the reference
interpolates only one of them: nulls are the mask of a `numpy.ma.MaskedArray`, NaN values are NaN.
"""

import numpy as np
from scipy.signal import lfilter

from hms_keras import constants

CLIP_UV = 65504.0  # largest float16; the 40 Hz signal is clipped to ±CLIP_UV µV before /1000
MIN_FRAMES = constants.WINDOW_FRAMES  # recordings shorter than 50 s are zero-padded to 2000 frames
CQF_HALF_LIFE_FRAMES = 13.0  # EWM half-life of the pairwise squared distances, 40 Hz frames
CQF_TOP_K = 3  # nearest other probes averaged per probe; cleanest probes averaged for the reference
CQF_EPS = 1e-4  # added to every distance and to the global reference distance
CQF_DISTANCE_THRESHOLD = 10.0  # GOF at which the CQF is 0.5
SPECTROGRAM_LOG_RANGE = (-4.0, 8.0)  # spectrogram power is clipped to [e^-4, e^8] before the log
SPECTROGRAM_STD_EPS = 1e-6

# Everything that changes the cached arrays; the cache manifest records it (hms_keras.data.cache).
PREPROCESS_PARAMETERS = {
    "raw_columns": list(constants.EEG_COLUMNS),
    "missing_samples": "parquet nulls inside a channel linearly interpolated from the non-null samples around "
    "them (a NaN value among those gives NaN); edge nulls and NaN values stay NaN (block NaN-mean, then 0)",
    "probes": list(constants.EEG_PROBES),
    "downsample_factor": constants.DOWNSAMPLE_FACTOR,
    "trailing_partial_block": "dropped",
    "median": "one scalar, NaN-median of the 19 probes over the whole recording",
    "clip_uv": CLIP_UV,
    "min_frames": MIN_FRAMES,
    "reference_voltage_uv": constants.REFERENCE_VOLTAGE_UV,
    "cqf_half_life_frames": CQF_HALF_LIFE_FRAMES,
    "cqf_top_k": CQF_TOP_K,
    "cqf_eps": CQF_EPS,
    "cqf_distance_threshold": CQF_DISTANCE_THRESHOLD,
    "dtype": "float16",
}

_NUM_PROBES = len(constants.EEG_PROBES)
_CQF_CHUNK_FRAMES = 4096  # bounds the (chunk, 19, 19) distance tensor to ~12 MB


def interpolate_interior_nulls(x) -> np.ndarray:
    """Linearly interpolate null runs between two non-null samples, per channel, along time.

    x: (time, channels) float; a `numpy.ma.MaskedArray` whose mask marks the nulls (as
    `hms.read_eeg` returns), or a plain array, which has none. As polars `interpolate()` (spec v5
    §1.2 step 1): the anchors are every non-null sample, NaN values included, so a null next to a
    NaN value becomes NaN; nulls before a channel's first or after its last non-null sample become
    NaN; NaN values are left as they are. Returns a new plain float64 array of the same shape.
    """
    nulls = np.ma.getmaskarray(x)  # (time, channels) bool, all False for a plain array
    out = np.array(np.ma.getdata(x), dtype=np.float64)  # (time, channels), a copy
    out[nulls] = np.nan  # whatever a masked array holds under its mask
    for channel in np.flatnonzero(nulls.any(axis=0)):
        column = out[:, channel]  # (time,) view into out
        known = np.flatnonzero(~nulls[:, channel])
        if known.size < 2:
            continue
        gaps = np.flatnonzero(nulls[:, channel])
        gaps = gaps[(gaps > known[0]) & (gaps < known[-1])]  # interior nulls only
        column[gaps] = np.interp(gaps, known, column[known])  # NaN when a neighbouring anchor is NaN
    return out


def block_nanmean(x: np.ndarray, factor: int) -> np.ndarray:
    """NaN-aware mean of non-overlapping blocks of `factor` samples along time (boxcar + decimate).

    x: (time, channels) -> (time // factor, channels) float64. A trailing partial block (fewer than
    `factor` samples, < 25 ms at 200 Hz) is dropped, as the reference's reshape requires. A block
    whose samples are all NaN gives NaN.
    """
    frames = x.shape[0] // factor
    blocks = np.asarray(x[: frames * factor], dtype=np.float64).reshape(frames, factor, x.shape[1])
    finite = ~np.isnan(blocks)  # (frames, factor, channels)
    counts = finite.sum(axis=1)  # (frames, channels)
    totals = np.where(finite, blocks, 0.0).sum(axis=1)  # (frames, channels)
    return np.divide(totals, counts, out=np.full(totals.shape, np.nan), where=counts > 0)


def drop_trailing_nan_rows(x: np.ndarray) -> np.ndarray:
    """Drop the rows after the last row in which every channel is finite.

    x: (time, channels) -> (time', channels), a prefix of x (NaN rows earlier on are kept). When no
    row is complete (e.g. a channel that is NaN throughout) nothing is dropped, as in the
    reference, whose argmax over an all-False row mask returns 0.
    """
    complete = ~np.isnan(x).any(axis=1)  # (time,)
    trailing = int(np.argmax(complete[::-1])) if complete.size else 0
    return x[: x.shape[0] - trailing]


def preprocess_eeg(raw_uv) -> tuple[np.ndarray, np.ndarray]:
    """The v5 preprocessing of one whole recording (v5 reference §1.2), in the reference's order.

    raw_uv: (time, 20) float µV at 200 Hz, columns `constants.EEG_COLUMNS` (EKG last). Missing
    samples come in the two kinds of a parquet file, which the reference treats differently: nulls
    are interpolated, NaN values are not. Pass nulls as the mask of a `numpy.ma.MaskedArray` (as
    `hms.read_eeg` returns); a NaN value, and every NaN of a plain ndarray, counts as a parquet NaN.
    Steps: linearly interpolate interior nulls per channel (edge nulls -> NaN) -> NaN-mean of
    5-sample blocks (200 -> 40 Hz, trailing partial block dropped) -> subtract one scalar, the
    NaN-median of the 19 probes over the whole recording -> clip to ±65504 µV -> drop trailing
    frames with a NaN in any of the 20 columns -> zero-pad on the right to >= 2000 frames ->
    remaining NaN -> 0 -> /1000 (mV) -> CQF of the 19 probes. Computed in float64, returned as
    float16. So an interior null gap is bridged by a line, while a gap of NaN values is averaged
    over within each 5-sample block and is 0 mV where a whole block is NaN.

    Returns (signal, cqf), each (frames, 19) float16, frames at 40 Hz, frames >= 2000: the 19
    probes in mV (EKG dropped) and their channel quality factor in (0, 1].
    Raises ValueError when raw_uv is not (time, 20) or its 19 probes hold no finite 40 Hz value.
    """
    shape = np.shape(raw_uv)
    if len(shape) != 2 or shape[1] != len(constants.EEG_COLUMNS):
        raise ValueError(f"expected raw EEG of shape (time, {len(constants.EEG_COLUMNS)}), got {shape}")
    x = interpolate_interior_nulls(raw_uv)  # (time, 20) µV, 200 Hz, NaN at NaN values and edge nulls
    x = block_nanmean(x, constants.DOWNSAMPLE_FACTOR)  # (frames, 20) µV, 40 Hz
    if np.isnan(x[:, :_NUM_PROBES]).all():
        raise ValueError(f"no finite value in the {_NUM_PROBES} EEG probes ({shape[0]} raw samples)")
    x -= np.nanmedian(x[:, :_NUM_PROBES])
    np.clip(x, -CLIP_UV, CLIP_UV, out=x)
    x = drop_trailing_nan_rows(x)  # (frames', 20)
    x = np.pad(x, ((0, max(0, MIN_FRAMES - x.shape[0])), (0, 0)))  # (max(frames', 2000), 20)
    x = np.nan_to_num(x, nan=0.0) / constants.REFERENCE_VOLTAGE_UV  # mV
    signal = x[:, :_NUM_PROBES]  # (frames, 19) mV
    return signal.astype(np.float16), channel_quality_factor(signal).astype(np.float16)


def channel_quality_factor(signal: np.ndarray) -> np.ndarray:
    """Per-probe, per-frame channel quality factor (GOF variant, v5 reference §1.3).

    signal: (frames, probes) finite float, 40 Hz (mV in the pipeline). For every pair of probes,
    d_pq(t) = causal EWM mean of (x_p - x_q)^2 (half-life 13 frames, weights normalised by their
    running sum: polars/pandas `adjust=True`, `min_periods=1`) + 1e-4. topk_p = mean of the 3
    smallest d_pq over q != p; global = mean of the 3 smallest topk_p; GOF_p = topk_p / (global +
    1e-4); CQF_p = 1 / (1 + max(GOF_p, 0) / 10). The reference sorts d_p. including d_pp = 1e-4
    and skips the first entry; since every d_pq >= 1e-4 = d_pp, excluding q = p gives the same.

    Returns (frames, probes) float64 in (0, 1]; near 0.91 for a channel that resembles its
    neighbours as closely as the cleanest channels do, 0.5 at GOF = 10.
    """
    x = np.asarray(signal, dtype=np.float64)
    frames, probes = x.shape
    first, second = np.triu_indices(probes, k=1)  # the probes*(probes-1)/2 unordered pairs
    # Column of every ordered pair (p, q) in [pair distances..., inf]; the diagonal -> the inf column.
    pair_of = np.full((probes, probes), first.size)
    pair_of[first, second] = pair_of[second, first] = np.arange(first.size)
    decay = 2.0 ** (-1.0 / CQF_HALF_LIFE_FRAMES)  # 1 - alpha
    state = np.zeros((1, first.size))  # lfilter state carried across chunks
    cqf = np.empty((frames, probes))
    for start in range(0, frames, _CQF_CHUNK_FRAMES):
        stop = min(start + _CQF_CHUNK_FRAMES, frames)
        chunk = x[start:stop]  # (chunk, probes)
        squared = (np.take(chunk, first, axis=1) - np.take(chunk, second, axis=1)) ** 2  # (chunk, pairs)
        # EWM numerator s_t = sq_t + decay * s_{t-1}; weight sum w_t = sum_{i<=t} decay^i.
        numerator, state = lfilter([1.0], [1.0, -decay], squared, axis=0, zi=state)  # (chunk, pairs)
        weight_sum = (1.0 - decay ** np.arange(start + 1, stop + 1)) / (1.0 - decay)  # (chunk,)
        pair_distance = numerator / weight_sum[:, None] + CQF_EPS  # (chunk, pairs)
        columns = np.concatenate([pair_distance, np.full((stop - start, 1), np.inf)], axis=1)
        distance = np.take(columns, pair_of.ravel(), axis=1).reshape(-1, probes, probes)  # (chunk, p, q)
        nearest = np.partition(distance, CQF_TOP_K - 1, axis=2)[:, :, :CQF_TOP_K]  # (chunk, p, k)
        top_k = nearest.mean(axis=2)  # (chunk, p)
        reference = np.partition(top_k, CQF_TOP_K - 1, axis=1)[:, :CQF_TOP_K].mean(axis=1)  # (chunk,)
        gof = top_k / (reference[:, None] + CQF_EPS)  # (chunk, p)
        cqf[start:stop] = 1.0 / (1.0 + np.maximum(gof, 0.0) / CQF_DISTANCE_THRESHOLD)
    return cqf


def spectrogram_window(values: np.ndarray, offset_seconds: float) -> np.ndarray:
    """The 600 s Kaggle-spectrogram image of one label row, as the ResNet34d baseline cuts it.

    values: (T, 400) float, one row per 2 s, columns `constants.SPECTROGRAM_COLUMNS` (the `time`
    column removed). offset_seconds: `spectrogram_label_offset_seconds` (0 for test rows).
    Returns (400, 300) float32: NaN -> 0, transposed to (frequency rows, time columns) with rows
    = 4 chains x 100 bins in file order (LL, RL, LP, RP), columns = rows [off // 2, off // 2 + 300)
    of the file. Raises ValueError when that window does not lie inside the T rows.
    """
    start = int(offset_seconds // constants.SPECTROGRAM_SECONDS_PER_ROW)
    stop = start + constants.SPECTROGRAM_WINDOW_ROWS
    if offset_seconds < 0 or stop > values.shape[0]:
        raise ValueError(
            f"spectrogram window rows [{start}, {stop}) for offset {offset_seconds} s "
            f"does not fit a spectrogram of {values.shape[0]} rows"
        )
    window = np.nan_to_num(np.asarray(values[start:stop], dtype=np.float32), nan=0.0)  # (300, 400)
    return np.ascontiguousarray(window.T)  # (400, 300)


MAX_TIME_SHIFT_ROWS = constants.SPECTROGRAM_WINDOW_ROWS // 2  # largest test-time shift of a window, rows (2 s)


def shift_spectrogram_window(window: np.ndarray, shift_rows: int) -> np.ndarray:
    """A test-time augmentation view of a `spectrogram_window`: its time columns moved by
    `shift_rows` (2 s each; |shift| <= MAX_TIME_SHIFT_ROWS), the columns that leave the window on
    one side replaced by a mirror image of the window's edge on the other.

    window: (400, 300) float32. Returns (400, 300) float32: columns [s, s + 300) of the window
    reflect-padded by |s| on the right (s > 0, later time) or on the left (s < 0). Only the
    window itself is used, never the rows of the file around it, because a Kaggle test
    spectrogram is exactly the window: the view measured out of fold is the view used at test time.
    """
    if abs(shift_rows) > MAX_TIME_SHIFT_ROWS:
        raise ValueError(f"spectrogram time shift {shift_rows} rows: |shift| must be <= {MAX_TIME_SHIFT_ROWS}")
    if shift_rows == 0:
        return window
    padding = (max(-shift_rows, 0), max(shift_rows, 0))
    padded = np.pad(window, ((0, 0), padding), mode="reflect")  # (400, 300 + |s|)
    start = max(shift_rows, 0)
    return np.ascontiguousarray(padded[:, start : start + window.shape[1]])  # (400, 300)


def normalize_spectrogram(image: np.ndarray) -> np.ndarray:
    """Per-image log standardisation of a spectrogram image (ResNet34d baseline).

    image: (400, 300) float power, NaN-free. Returns (400, 300) float32:
    z = log(clip(image, e^-4, e^8)); (z - mean(z)) / (std(z) + 1e-6), mean and std (ddof 0)
    over the whole image.
    """
    low, high = np.exp(SPECTROGRAM_LOG_RANGE[0]), np.exp(SPECTROGRAM_LOG_RANGE[1])
    z = np.log(np.clip(np.asarray(image, dtype=np.float64), low, high))  # (400, 300)
    return ((z - z.mean()) / (z.std() + SPECTROGRAM_STD_EPS)).astype(np.float32)
