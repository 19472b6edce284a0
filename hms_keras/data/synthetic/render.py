"""The session signal: a planned `Session` rendered to (samples, 20) µV, and its Kaggle-style spectrogram."""

from __future__ import annotations

import numpy as np
import scipy.fft
import scipy.signal
from numpy.lib.stride_tricks import sliding_window_view

from hms_keras import constants
from hms_keras.data import montage
from hms_keras.data.synthetic.plan import MARGIN_S, EegFile, Segment, Session

FS = constants.RAW_SAMPLING_RATE_HZ  # 200 Hz
NUM_PROBES = len(constants.EEG_PROBES)  # 19
EKG_COLUMN = constants.EEG_COLUMNS.index("EKG")  # 19
SPEC_FRAME = 1024  # samples per spectrogram frame (5.12 s): bin k is k * 200 / 1024 Hz
SPEC_HOP = FS * constants.SPECTROGRAM_SECONDS_PER_ROW  # 400 samples = 2 s
SPEC_FIRST_BIN = 3  # bins 3..102 are the 100 Kaggle frequencies, 0.59 .. 19.92 Hz

# Approximate scalp positions of the 19 probes (EEG_PROBES order): x left(-1)..right(+1),
# y back(-1)..front(+1).
_PROBE_XY = np.array([
    (-0.30, 0.95), (-0.40, 0.50), (-0.50, 0.00), (-0.40, -0.50),  # Fp1 F3 C3 P3
    (-0.80, 0.60), (-1.00, 0.00), (-0.80, -0.60), (-0.30, -0.95),  # F7 T3 T5 O1
    (0.00, 0.50), (0.00, 0.00), (0.00, -0.50),  # Fz Cz Pz
    (0.30, 0.95), (0.40, 0.50), (0.50, 0.00), (0.40, -0.50),  # Fp2 F4 C4 P4
    (0.80, 0.60), (1.00, 0.00), (0.80, -0.60), (0.30, -0.95),  # F8 T4 T6 O2
])
_SPLIT_STREAM = {"train": 1, "test": 2}  # seeds each split's per-session render generators apart


# --------------------------------------------------------------------------------------------
# the session signal


def render_session(session: Session, seed: int) -> np.ndarray:
    """The session's signal: (samples, 20) float32 µV at 200 Hz, EEG_COLUMNS order.

    Sample i is session second i / 200 - MARGIN_S, so the array covers session seconds
    [-MARGIN_S, session.seconds + MARGIN_S). Deterministic in (seed, session.split, session.index);
    background, patterns and nuisances draw from separate generators, so a session that differs
    only in its segments has the same background and nuisances.
    """
    background_rng, pattern_rng, nuisance_rng = (
        np.random.default_rng([seed, _SPLIT_STREAM[session.split], session.index, stream]) for stream in range(3))
    n = (session.seconds + 2 * MARGIN_S) * FS
    signal = np.zeros((n, len(constants.EEG_COLUMNS)), np.float32)
    signal[:, :NUM_PROBES] = _background(background_rng, n)
    for segment in session.segments:
        _add_segment(pattern_rng, signal, segment)
    _add_ekg(nuisance_rng, signal)
    _add_blinks(nuisance_rng, signal)
    _add_line_noise(nuisance_rng, signal)
    _add_bad_channel(nuisance_rng, signal)
    _add_outliers(nuisance_rng, signal)
    _add_nan_gaps(nuisance_rng, signal, session.eegs)
    return signal


def _colored_noise(rng, n: int, amplitude: np.ndarray) -> np.ndarray:
    """(n, k) float32 Gaussian noise with amplitude spectrum shaped like `amplitude` (n // 2 + 1, k).

    Each column is scaled to an expected RMS of 1 (a complex normal bin has E|X|² = 2, and irfft
    counts every bin but DC twice, so the variance is 4 Σ amplitude² / n²).
    """
    scale = n / np.sqrt(np.maximum(4.0 * np.sum(amplitude[1:].astype(np.float64) ** 2, axis=0), 1e-12))
    spectrum = np.empty(amplitude.shape, np.complex64)
    spectrum.real = rng.standard_normal(amplitude.shape, np.float32)
    spectrum.imag = rng.standard_normal(amplitude.shape, np.float32)
    spectrum *= (amplitude * scale).astype(np.float32)
    return scipy.fft.irfft(spectrum, n=n, axis=0)


def _frequencies(n: int) -> np.ndarray:
    """(n // 2 + 1,) float32 rfft frequencies in Hz of n samples at 200 Hz."""
    return np.fft.rfftfreq(n, 1.0 / FS).astype(np.float32)


def _background(rng, n: int) -> np.ndarray:
    """(n, 19) float32 µV: per-electrode 1/f noise + a common 1/f part + posterior alpha + DC offsets."""
    freq = _frequencies(n)
    exponent = rng.uniform(0.8, 1.6)
    pink = (freq > 0.1) / (freq + 0.5) ** (exponent / 2) / (1.0 + (freq / 70.0) ** 4)  # (n_freq,)
    alpha_hz = rng.uniform(8.5, 11.0)
    alpha = np.exp(-0.5 * ((freq - alpha_hz) / 0.5) ** 2)
    shapes = np.concatenate([np.repeat(pink[:, None], NUM_PROBES + 1, axis=1), alpha[:, None]], axis=1)
    sources = _colored_noise(rng, n, shapes)  # (n, 21): 19 own, common, alpha
    own_rms = rng.uniform(8.0, 20.0) * rng.uniform(0.7, 1.3, NUM_PROBES)
    common_rms = rng.uniform(10.0, 30.0)
    alpha_rms = rng.uniform(6.0, 20.0) if rng.random() < 0.6 else 0.0
    background = sources[:, :NUM_PROBES] * own_rms + sources[:, NUM_PROBES:NUM_PROBES + 1] * common_rms
    background += np.outer(sources[:, -1], alpha_rms * _alpha_weights())
    return background + rng.normal(0.0, 20.0, NUM_PROBES).astype(np.float32)


def _alpha_weights() -> np.ndarray:
    """(19,) alpha amplitude per probe: strongest at O1/O2, then P3/P4/Pz/T5/T6, faint in front."""
    y = _PROBE_XY[:, 1]
    return np.clip(0.15 - 0.85 * y, 0.05, 1.0)


def _field(rng, side: int) -> np.ndarray:
    """(19,) spatial weights in [0, 1] of a pattern.

    side -1/+1: a Gaussian around a focus on the left/right hemisphere, elongated front to back
    (the other hemisphere gets almost nothing); side 0: a focus and its mirror image, frontally
    predominant (generalized).
    Each weight is scaled by 0.6-1 (mirror probes alike), so neighbouring electrodes differ and
    the pattern shows on every bipolar pair inside its field.
    """
    jitter = rng.uniform(0.6, 1.0, NUM_PROBES)
    jitter = np.minimum(jitter, jitter[montage.MIRROR_INDEX])
    if side:
        focus = np.array([side * rng.uniform(0.5, 1.0), rng.uniform(-0.6, 0.6)])
        return jitter * _gaussian_field(focus, rng.uniform(0.35, 0.5), rng.uniform(0.6, 0.9))
    focus = np.array([rng.uniform(0.3, 0.7), rng.uniform(0.0, 0.8)])
    width_x, width_y = rng.uniform(0.4, 0.6), rng.uniform(0.5, 0.8)
    mirrored = focus * [-1, 1]
    return jitter * np.maximum(_gaussian_field(focus, width_x, width_y), _gaussian_field(mirrored, width_x, width_y))


def _gaussian_field(focus: np.ndarray, width_x: float, width_y: float) -> np.ndarray:
    """(19,) exp(-dx² / 2 width_x² - dy² / 2 width_y²), (dx, dy) = probe position - `focus` (scalp units)."""
    dx, dy = (_PROBE_XY - focus).T
    return np.exp(-0.5 * (dx / width_x) ** 2 - 0.5 * (dy / width_y) ** 2).astype(np.float32)


def _add_segment(rng, signal: np.ndarray, segment: Segment) -> None:
    """Add a segment's pattern (with 1 s fade-in/out) to the probes of `signal` in place."""
    first = max(0, round((segment.start_s + MARGIN_S) * FS))
    stop = min(len(signal), round((segment.end_s + MARGIN_S) * FS))
    if stop <= first:
        return
    pattern = _PATTERN_RENDERERS[segment.pattern](rng, stop - first, segment.side, segment.gain)  # (n, 19)
    signal[first:stop, :NUM_PROBES] += pattern * _taper(stop - first)[:, None]


def _taper(n: int) -> np.ndarray:
    """(n,) float32 window: cosine ramps of min(1 s, n / 4) at both ends, 1 in between."""
    ramp = max(1, min(FS, n // 4))
    window = np.ones(n, np.float32)
    edge = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
    window[:ramp] = edge
    window[n - ramp:] = np.minimum(window[n - ramp:], edge[::-1])
    return window


def _phase(freq_hz: np.ndarray) -> np.ndarray:
    """(n,) phase in radians of an oscillation with instantaneous frequency `freq_hz` (n,)."""
    return 2.0 * np.pi * np.cumsum(freq_hz, dtype=np.float64) / FS


def _seconds(n: int) -> np.ndarray:
    """(n,) float32 time in seconds of n samples at 200 Hz."""
    return np.arange(n, dtype=np.float32) / FS


def _render_seizure(rng, n: int, side: int, gain: float) -> np.ndarray:
    """(n, 19) µV: sharp-contoured 3.5-7.5 Hz rhythm with frequency and amplitude evolving over 10-25 s."""
    t = _seconds(n)
    period = rng.uniform(10.0, 25.0)
    cycle = 2.0 * np.pi * t / period + rng.uniform(0, 2 * np.pi)
    freq = rng.uniform(3.5, 7.5) * (1.0 + rng.uniform(0.25, 0.4) * np.sin(cycle))
    phase = _phase(freq)
    wave = np.sin(phase) + 0.5 * np.sin(2 * phase + 0.5) + 0.25 * np.sin(3 * phase + 1.0)
    envelope = gain * rng.uniform(100.0, 220.0) * (1.0 + 0.4 * np.cos(cycle))
    return np.outer(envelope * wave, _field(rng, side)).astype(np.float32)


def _render_discharges(rng, n: int, side: int, gain: float) -> np.ndarray:
    """(n, 19) µV: periodic discharges every 0.5-1.25 s (LPD with side ±1, GPD with side 0)."""
    rate_hz = rng.uniform(0.8, 2.0)
    times = _beat_samples(rng, n, rate_hz, jitter=0.06)
    triphasic = side == 0 and rng.random() < 0.5
    kernel, centre = _discharge_kernel(triphasic)
    amplitudes = gain * rng.uniform(150.0, 300.0) * rng.uniform(0.8, 1.2, len(times))
    wave = _place_kernel(n, times, amplitudes, kernel, centre)
    return np.outer(wave, _field(rng, side)).astype(np.float32)


def _render_delta(rng, n: int, side: int, gain: float) -> np.ndarray:
    """(n, 19) µV: rhythmic 1-2.5 Hz delta with a steady frequency (LRDA with side ±1, GRDA with 0)."""
    t = _seconds(n)
    wobble = 1.0 + 0.04 * np.sin(2 * np.pi * t / rng.uniform(8.0, 20.0) + rng.uniform(0, 2 * np.pi))
    phase = _phase(rng.uniform(1.0, 2.5) * wobble)
    wave = np.sin(phase) + 0.25 * np.sin(2 * phase + np.pi / 2)
    envelope = gain * rng.uniform(80.0, 200.0) * (1.0 + 0.15 * np.sin(2 * np.pi * t / rng.uniform(5.0, 15.0)))
    return np.outer(envelope * wave, _field(rng, side)).astype(np.float32)


def _render_other(rng, n: int, side: int, gain: float) -> np.ndarray:
    """(n, 19) µV of non-IIIC activity: nothing, polymorphic delta, sporadic sharp waves or muscle."""
    kind = rng.choice(4, p=(0.3, 0.35, 0.2, 0.15))
    if kind == 0:
        return np.zeros((n, NUM_PROBES), np.float32)
    if kind == 1:
        return _polymorphic_delta(rng, n, side)
    if kind == 2:
        return _sporadic_sharp_waves(rng, n, side)
    return _muscle(rng, n)


def _polymorphic_delta(rng, n: int, side: int) -> np.ndarray:
    """(n, 19) µV: broadband 0.5-4 Hz noise (irregular slowing, not rhythmic), 15-40 µV RMS."""
    freq = _frequencies(n)
    band = ((freq >= 0.5) & (freq <= 4.0)).astype(np.float32)[:, None]
    wave = _colored_noise(rng, n, band)[:, 0] * rng.uniform(15.0, 40.0)
    return np.outer(wave, _field(rng, side)).astype(np.float32)


def _sporadic_sharp_waves(rng, n: int, side: int) -> np.ndarray:
    """(n, 19) µV: isolated sharp waves at random (Poisson) times, 0.05-0.25 per second."""
    count = rng.poisson(rng.uniform(0.05, 0.25) * n / FS)
    times = np.sort(rng.integers(0, n, count))
    kernel, centre = _discharge_kernel(triphasic=False)
    wave = _place_kernel(n, times, rng.uniform(60.0, 140.0, count), kernel, centre)
    return np.outer(wave, _field(rng, side)).astype(np.float32)


def _muscle(rng, n: int) -> np.ndarray:
    """(n, 19) µV: 20-70 Hz bursts on the temporal electrodes (F7 F8 T3 T4 T5 T6)."""
    freq = _frequencies(n)
    band = ((freq >= 20.0) & (freq <= 70.0)).astype(np.float32)[:, None]
    burst = np.maximum(0.0, np.sin(2 * np.pi * _seconds(n) / rng.uniform(3.0, 10.0))) ** 2
    wave = _colored_noise(rng, n, band)[:, 0] * burst * rng.uniform(10.0, 30.0)
    weights = np.isin(constants.EEG_PROBES, ("F7", "F8", "T3", "T4", "T5", "T6")).astype(np.float32)
    return np.outer(wave, weights).astype(np.float32)


# Renderer of each class's pattern, CLASSES order: (rng, n, side, gain) -> (n, 19) float32 µV.
_PATTERN_RENDERERS = (_render_seizure, _render_discharges, _render_discharges, _render_delta, _render_delta,
                      _render_other)


def _beat_samples(rng, n: int, rate_hz: float, jitter: float) -> np.ndarray:
    """Sample indices < n of events at `rate_hz` with relative interval jitter (sd), random phase."""
    period = FS / rate_hz
    intervals = period * (1.0 + jitter * rng.standard_normal(int(n / period) + 2))
    times = rng.uniform(0, period) + np.cumsum(np.maximum(intervals, 0.5 * period)) - period
    return times[(times >= 0) & (times < n)].astype(np.int64)


def _discharge_kernel(triphasic: bool) -> tuple[np.ndarray, int]:
    """A discharge waveform (peak |value| ~1) at 200 Hz from -0.1 to 0.5 s, and the sample of t=0.

    Sharp negative wave (sd 25 ms, ~100 ms wide) followed by a slow positive wave at 160 ms;
    triphasic adds a small positive phase before the sharp wave.
    """
    t = np.arange(-0.1, 0.5, 1.0 / FS)
    kernel = -_gauss(t, 0.0, 0.025) + 0.5 * _gauss(t, 0.16, 0.07)
    if triphasic:
        kernel += 0.35 * _gauss(t, -0.07, 0.03)
    return kernel.astype(np.float32), round(0.1 * FS)


def _gauss(t: np.ndarray, centre: float, width: float) -> np.ndarray:
    """Unit-height Gaussian bump at `centre` with standard deviation `width` (units of `t`)."""
    return np.exp(-0.5 * ((t - centre) / width) ** 2)


def _place_kernel(n: int, times: np.ndarray, amplitudes: np.ndarray, kernel: np.ndarray, centre: int) -> np.ndarray:
    """(n,) float32: `kernel` (its sample `centre` at each time) scaled by `amplitudes`, summed."""
    impulses = np.zeros(n, np.float32)
    np.add.at(impulses, times, amplitudes)
    return np.convolve(impulses, kernel)[centre:centre + n].astype(np.float32)


# --------------------------------------------------------------------------------------------
# nuisances (all in place on the (samples, 20) µV session signal)


def _add_ekg(rng, signal: np.ndarray) -> None:
    """EKG channel (R wave 1.5-6 mV, 50-110 bpm, baseline wander) and its 0-15 µV leak into the probes.

    The leak is three times stronger on the left hemisphere, as EKG artefact usually is.
    """
    n = len(signal)
    t = np.arange(-0.1, 0.45, 1.0 / FS)
    beat = (1.0 * _gauss(t, 0.0, 0.01) - 0.2 * _gauss(t, -0.025, 0.008) - 0.25 * _gauss(t, 0.025, 0.008)
            + 0.3 * _gauss(t, 0.25, 0.05)).astype(np.float32)
    beats = _beat_samples(rng, n, rng.uniform(50.0, 110.0) / 60.0, jitter=0.04)
    heart = _place_kernel(n, beats, np.ones(len(beats), np.float32), beat, round(0.1 * FS))
    wander = 100.0 * np.sin(2 * np.pi * 0.2 * _seconds(n) + rng.uniform(0, 2 * np.pi))
    signal[:, EKG_COLUMN] = rng.uniform(1500.0, 6000.0) * heart + wander + rng.normal(0.0, 10.0, n)
    leak = rng.uniform(0.0, 10.0) * rng.uniform(0.0, 1.0, NUM_PROBES) * (1.0 - 0.5 * np.sign(_PROBE_XY[:, 0]))
    signal[:, :NUM_PROBES] += np.outer(heart, leak.astype(np.float32))


def _add_blinks(rng, signal: np.ndarray) -> None:
    """In half the sessions: eye blinks (80-200 µV, ~0.4 s) on Fp1/Fp2, weaker on F3/F4/F7/F8/Fz."""
    if rng.random() < 0.5:
        return
    n = len(signal)
    count = rng.poisson(rng.uniform(0.05, 0.3) * n / FS)
    t = np.arange(-0.3, 0.3, 1.0 / FS)
    blink = _gauss(t, 0.0, 0.08).astype(np.float32)
    wave = _place_kernel(n, rng.integers(0, n, count), rng.uniform(80.0, 200.0, count), blink, int(0.3 * FS))
    weights = np.clip(_PROBE_XY[:, 1] - 0.4, 0.0, 1.0) / 0.55  # 1 at Fp1/Fp2, ~0.2 at F3/F4/Fz
    signal[:, :NUM_PROBES] += np.outer(wave, weights.astype(np.float32))


def _add_line_noise(rng, signal: np.ndarray) -> None:
    """In 35 % of sessions: 60 Hz mains, 0-15 µV with a random phase on each of the 20 channels."""
    if rng.random() >= 0.35:
        return
    channels = signal.shape[1]
    phase = 2 * np.pi * 60.0 * np.arange(len(signal)) / FS  # (samples,)
    shift = rng.uniform(0, 2 * np.pi, channels)
    amplitude = rng.uniform(0.0, 15.0, channels)  # sin(a + b) = sin a cos b + cos a sin b
    signal += np.outer(np.sin(phase), amplitude * np.cos(shift)).astype(np.float32)
    signal += np.outer(np.cos(phase), amplitude * np.sin(shift)).astype(np.float32)


def _add_bad_channel(rng, signal: np.ndarray) -> None:
    """In 6 % of sessions one probe is flat (0 µV); in another 6 % one probe has 100-300 µV noise."""
    draw = rng.random()
    probe = rng.integers(NUM_PROBES)
    if draw < 0.06:
        signal[:, probe] = 0.0
    elif draw < 0.12:
        signal[:, probe] += rng.normal(0.0, rng.uniform(100.0, 300.0), len(signal)).astype(np.float32)


def _add_outliers(rng, signal: np.ndarray) -> None:
    """In 15 % of sessions 1-3 electrode pops: 1-40 samples of ±3,000-30,000 µV on one channel."""
    if rng.random() >= 0.15:
        return
    for _ in range(rng.integers(1, 4)):
        length = rng.integers(1, 41)
        first = rng.integers(0, len(signal) - length)
        signal[first:first + length, rng.integers(signal.shape[1])] = rng.choice((-1, 1)) * rng.uniform(3e3, 3e4)


def _add_nan_gaps(rng, signal: np.ndarray, eegs: tuple[EegFile, ...]) -> None:
    """In 12 % of EEG files, a 0.1-3 s gap (NaN on all 20 channels) at least 1 s inside the file."""
    for eeg in eegs:
        if rng.random() >= 0.12:
            continue
        length = int(rng.uniform(0.1, 3.0) * FS)
        file_first = (eeg.start_s + MARGIN_S) * FS
        first = file_first + FS + rng.integers(0, eeg.seconds * FS - 2 * FS - length)
        signal[first:first + length] = np.nan


# --------------------------------------------------------------------------------------------
# spectrogram: session signal -> Kaggle-style spectrogram rows


def _spectrogram(signal: np.ndarray, n_rows: int) -> np.ndarray:
    """Kaggle-style spectrogram of a rendered session: (n_rows, 400) float32, µV²/Hz.

    Row r is centred on session second 2r + 1 (sample (MARGIN_S + 2r + 1) * 200 of `signal`); per
    bipolar pair a Hann-windowed 1024-sample power spectral density, bins 3..102 (0.59-19.92 Hz),
    averaged over the 4 pairs of each chain; chains in SPECTROGRAM_CHAINS order. A frame touching a
    NaN gives NaN.
    """
    pairs = [pair for chain in constants.SPECTROGRAM_CHAINS for pair in constants.SPECTROGRAM_CHAIN_PAIRS[chain]]
    bipolar = montage.bipolar_signal(signal[:, :NUM_PROBES])[:, pairs]  # (samples, 16) µV
    first = (MARGIN_S + 1) * FS - SPEC_FRAME // 2
    frames = sliding_window_view(bipolar, SPEC_FRAME, axis=0)[first::SPEC_HOP][:n_rows]  # (rows, 16, 1024)
    window = scipy.signal.get_window("hann", SPEC_FRAME).astype(np.float32)  # periodic Hann
    spectrum = scipy.fft.rfft(frames * window, axis=-1)[..., SPEC_FIRST_BIN:SPEC_FIRST_BIN + constants.SPECTROGRAM_BINS]
    density = 2.0 * np.abs(spectrum) ** 2 / (FS * np.sum(window**2))  # (rows, 16, 100)
    chains = density.reshape(n_rows, len(constants.SPECTROGRAM_CHAINS), 4, constants.SPECTROGRAM_BINS).mean(axis=2)
    return chains.reshape(n_rows, -1).astype(np.float32)  # (rows, 400)

