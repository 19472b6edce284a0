"""The electrode montage as probe indices: the double-banana bipolar pairs and the left/right mirror.

Numpy only, so the synthetic-data generator and the v5 input pipeline (`transforms`) share these
facts without the generator importing Grain. Indices point into the 19 probes in
`constants.EEG_PROBES` order; bipolar channels come in `constants.BIPOLAR_PAIRS` order.
"""

import numpy as np

from hms_keras import constants

_PROBE = {name: i for i, name in enumerate(constants.EEG_PROBES)}
ANODES = np.array([_PROBE[a] for a, _ in constants.BIPOLAR_PAIRS])  # (18,) probe index
CATHODES = np.array([_PROBE[c] for _, c in constants.BIPOLAR_PAIRS])  # (18,) probe index
LEFT_PROBES = np.array([_PROBE[left] for left, _ in constants.MIRROR_PROBE_PAIRS])  # (8,)
RIGHT_PROBES = np.array([_PROBE[right] for _, right in constants.MIRROR_PROBE_PAIRS])  # (8,)
MIDLINE = np.array([_PROBE[name] for name in constants.MIDLINE_PROBES])  # (3,)


def _mirror_index() -> np.ndarray:
    """(19,) gather index of each probe's left/right mirror image; Fz, Cz, Pz map to themselves."""
    index = np.arange(len(constants.EEG_PROBES))
    index[LEFT_PROBES] = RIGHT_PROBES
    index[RIGHT_PROBES] = LEFT_PROBES
    return index


MIRROR_INDEX = _mirror_index()  # (19,) probe index; x[:, MIRROR_INDEX] swaps the hemispheres


def bipolar_signal(signal: np.ndarray) -> np.ndarray:
    """Double-banana montage: signal (time, 19) -> anode - cathode (time, 18) in the same unit,
    channels in BIPOLAR_PAIRS order."""
    return signal[:, ANODES] - signal[:, CATHODES]


def bipolar_mask(cqf: np.ndarray) -> np.ndarray:
    """Soft quality mask of each bipolar channel: CQF (time, 19) -> CQF[anode] * CQF[cathode]
    (time, 18), channels in BIPOLAR_PAIRS order."""
    return cqf[:, ANODES] * cqf[:, CATHODES]
