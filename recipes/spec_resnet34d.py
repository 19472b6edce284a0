"""The public "HMS-HBAC ResNet34d Baseline" on Kaggle spectrograms, ported to Keras 3.

    python -m recipes.train --recipe spec_resnet34d --data-dir /path/to/hms-harmful-brain-activity-classification

Reference result (PyTorch + timm, ImageNet-pretrained): OOF CV 0.7158 over the first row of each
spectrogram, public LB 0.49 (`docs/spectrogram_baseline.md`). Here the backbone starts from
random weights unless a local keras-hub preset is supplied, so expect a worse CV.

`spec_resnet34d:quick` trains fold 0 for one epoch on the embedded synthetic dataset (a smoke run:
ResNet-34 on 512 x 512 images is slow on a CPU).
"""

import dataclasses

from hms_keras.recipe import DataSettings, Recipe, TrainSettings

DEFAULT = Recipe(
    name="spec_resnet34d",
    task="spectrogram",
    model="spec_resnet34d",
    data=DataSettings(),
    train=TrainSettings(
        epochs=9,
        batch_size=32,
        learning_rate=1e-3,
        weight_decay=1e-2,
        epsilon=1e-8,
        schedule="one_cycle",
        checkpoint="best",
        early_stopping_patience=5,
    ),
    folds=(0, 1, 2, 3, 4),
    seeds=(1086,),
)

QUICK = dataclasses.replace(
    DEFAULT,
    name="spec_resnet34d_quick",
    train=dataclasses.replace(DEFAULT.train, epochs=1, batch_size=8),
    folds=(0,),
)

VARIANTS = {"default": DEFAULT, "quick": QUICK}
