"""Model builders, looked up by name in `MODELS` (name -> `build_*(name=...) -> keras.Model`)."""

from hms_keras.models.eeg_dual import build_v5_eeg_model
from hms_keras.models.spectrogram import build_spectrogram_resnet34d

MODELS = {
    "v5_eeg_dual_effnet1d": build_v5_eeg_model,
    "spec_resnet34d": build_spectrogram_resnet34d,
}

__all__ = ["MODELS", "build_spectrogram_resnet34d", "build_v5_eeg_model"]
