"""Per-record transforms of the v5 raw-EEG pipeline (v5 reference §1.4, §1.5, §5.1).

A record starts as one cached 50 s window, `(2000, 2, 19) float32` ([:, 0] = signal in mV,
[:, 1] = channel quality factor, 40 Hz, probes in `constants.EEG_PROBES` order), and ends as
the model inputs `{"eeg": (512, 18) float32 mV, "mask": (512, 18) float32}` (time, bipolar
channels in `constants.BIPOLAR_PAIRS` order).

Training pads the window (`pad_window`), augments it (`augment_monopolar`) and runs the
`front_end`; evaluation and inference skip the augmentations: `window_inputs`.
Every augmentation is a pure function of arrays and a `np.random.Generator`; inputs are never
modified. `AugmentMonopolar` and `V5FrontEnd` are the thin picklable Grain wrappers.
"""

import grain
import numpy as np
import scipy.signal

from hms_keras import constants
from hms_keras.data.montage import LEFT_PROBES, MIDLINE, MIRROR_INDEX, RIGHT_PROBES, bipolar_mask, bipolar_signal

P_SWAP = 0.5
P_PERMUTE = 0.3
P_CUTOUT = 0.3
CUTOUT_COUNT = 4
CUTOUT_MAX_FRAMES = 128


def pad_window(window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split a cached window into signal and CQF, right-padded to `constants.PADDED_FRAMES`.

    window: (frames, 2, 19) float32 with frames <= 2048. The signal is reflect-padded (mirror
    without repeating the last frame), the CQF zero-padded (v5 reference §1.4).
    Returns signal (2048, 19) float32 mV and cqf (2048, 19) float32.
    """
    frames = window.shape[0]
    pad = constants.PADDED_FRAMES - frames
    mirrored = window[frames - 2 : frames - 2 - pad : -1, 0]  # (pad, 19): frames T-2, T-3, ...
    signal = np.concatenate([window[:, 0], mirrored])  # (2048, 19)
    cqf = np.concatenate([window[:, 1], np.zeros((pad, window.shape[2]), window.dtype)])  # (2048, 19)
    return signal, cqf


def swap_left_right(signal: np.ndarray, cqf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exchange the 8 left/right mirror probe pairs in signal and CQF, both (time, 19)."""
    return signal[:, MIRROR_INDEX], cqf[:, MIRROR_INDEX]


def symmetric_permutation(rng: np.random.Generator) -> np.ndarray:
    """(19,) gather index: one permutation of the 8 mirror pairs, applied to the left and the
    right probes together, and an independent permutation of Fz, Cz, Pz."""
    pair_order = rng.permutation(len(LEFT_PROBES))  # (8,)
    index = np.arange(len(constants.EEG_PROBES))
    index[LEFT_PROBES] = LEFT_PROBES[pair_order]
    index[RIGHT_PROBES] = RIGHT_PROBES[pair_order]
    index[MIDLINE] = MIDLINE[rng.permutation(len(MIDLINE))]
    return index


def permute_channels(
    signal: np.ndarray, cqf: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Apply one `symmetric_permutation` to the probes of signal and CQF, both (time, 19)."""
    index = symmetric_permutation(rng)
    return signal[:, index], cqf[:, index]


def cutout(signal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Zero `CUTOUT_COUNT` time segments of the signal (time, 19) on all channels.

    Each segment: length L ~ U{0..128} frames, start ~ U{0..time-L-1} (v5 reference §5.1).
    """
    signal = signal.copy()
    for _ in range(CUTOUT_COUNT):
        length = int(rng.integers(0, CUTOUT_MAX_FRAMES + 1))
        start = int(rng.integers(0, signal.shape[0] - length))
        signal[start : start + length] = 0.0
    return signal


def augment_monopolar(
    signal: np.ndarray, cqf: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The v5 data-loader augmentations in order, each with its own probability (v5 reference §5.1):
    L/R swap (p 0.5), L/R-consistent channel permutation (p 0.3), four cut-outs (p 0.3).

    signal, cqf: (time, 19) float32. Returns new arrays of the same shapes; the CQF follows the
    swap and the permutation and is left unchanged by cut-outs.
    """
    if rng.random() < P_SWAP:
        signal, cqf = swap_left_right(signal, cqf)
    if rng.random() < P_PERMUTE:
        signal, cqf = permute_channels(signal, cqf, rng)
    if rng.random() < P_CUTOUT:
        signal = cutout(signal, rng)
    return signal, cqf


def highpass_clip(eeg: np.ndarray) -> np.ndarray:
    """0.5 Hz high-pass biquad along time (zero initial state, forward only), then clip to
    [-1, 1] mV. eeg: (time, channels) mV at 40 Hz -> (time, channels) float32."""
    filtered = scipy.signal.lfilter(constants.HIGHPASS_B, constants.HIGHPASS_A, eeg, axis=0)
    return np.clip(filtered, -constants.HIGHPASS_CLIP_MV, constants.HIGHPASS_CLIP_MV).astype(np.float32)


CROP = slice(constants.CROP_START, constants.CROP_START + constants.CROP_FRAMES)
# Crop shifts (40 Hz frames) that keep the 512-frame crop inside the 2048-frame padded window:
# test-time augmentation views (`front_end(crop_shift=...)`).
CROP_SHIFT_RANGE = (-constants.CROP_START, constants.PADDED_FRAMES - CROP.stop)  # (-744, 792)


def check_crop_shift(crop_shift: int) -> None:
    """Raise ValueError unless the crop moved by `crop_shift` frames stays inside the padded window."""
    low, high = CROP_SHIFT_RANGE
    if not low <= crop_shift <= high:
        raise ValueError(
            f"crop shift {crop_shift} frames moves the 512-frame crop out of the {constants.PADDED_FRAMES}-frame "
            f"window; shifts lie within {low}..{high}"
        )


def front_end(signal: np.ndarray, cqf: np.ndarray, crop_shift: int = 0) -> dict[str, np.ndarray]:
    """Bipolar montage, high-pass + clip, central crop (v5 reference §1.5).

    signal, cqf: (2048, 19) float32. Returns {"eeg": (512, 18) float32 mV, "mask": (512, 18)
    float32}, frames [744, 1256) of the window, or [744 + crop_shift, 1256 + crop_shift) for a
    test-time augmentation view (within `CROP_SHIFT_RANGE`; training always uses 0). The filter
    is causal, so it runs only over the frames up to the end of the crop; the result equals
    filtering all 2048 frames.
    """
    crop = CROP
    if crop_shift:
        check_crop_shift(crop_shift)
        crop = slice(CROP.start + crop_shift, CROP.stop + crop_shift)
    eeg = highpass_clip(bipolar_signal(signal[: crop.stop]))  # (crop.stop, 18)
    return {"eeg": eeg[crop], "mask": bipolar_mask(cqf[crop])}  # (512, 18) each


def window_inputs(window: np.ndarray, crop_shift: int = 0) -> dict[str, np.ndarray]:
    """The unaugmented model inputs of one cached window (evaluation, inference): `pad_window`,
    then `front_end` (the crop moved by `crop_shift` frames for a test-time augmentation view).
    window: (frames <= 2048, 2, 19) float32. Returns {"eeg": (512, 18) float32 mV, "mask":
    (512, 18) float32}."""
    return front_end(*pad_window(window), crop_shift=crop_shift)


class AugmentMonopolar(grain.transforms.RandomMap):
    """Grain wrapper of `augment_monopolar` on a record {"signal", "cqf", ...}; other keys pass."""

    def random_map(self, element: dict, rng: np.random.Generator) -> dict:
        signal, cqf = augment_monopolar(element["signal"], element["cqf"], rng)
        return {**element, "signal": signal, "cqf": cqf}


class V5FrontEnd(grain.transforms.Map):
    """Grain wrapper of `front_end`: record {"signal", "cqf", "y"} -> (inputs dict, y);
    a record without "y" (unlabelled test EEGs) -> the inputs dict alone."""

    def map(self, element: dict) -> tuple[dict[str, np.ndarray], np.ndarray] | dict[str, np.ndarray]:
        inputs = front_end(element["signal"], element["cqf"])
        return (inputs, element["y"]) if "y" in element else inputs
