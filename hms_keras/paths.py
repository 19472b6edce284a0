"""Where hms_keras keeps what it generates: the embedded dataset and the preprocessing caches.

The root is `$HMS_KERAS_CACHE` when set, else `~/.cache/hms_keras`. Kaggle inputs may be
read-only, so nothing is ever written inside a user's data directory.
"""

import hashlib
import os
from pathlib import Path


def cache_root() -> Path:
    """The folder under which every generated artefact lives."""
    return Path(os.environ.get("HMS_KERAS_CACHE", Path.home() / ".cache" / "hms_keras")).expanduser()


def data_cache_dir(data_dir: Path, kind: str) -> Path:
    """Cache folder for one kind of preprocessed array (e.g. "v5_eeg/train") of one data folder.

    The folder name carries a hash of the data folder's absolute path, so two datasets
    never share a cache.
    """
    data_dir = Path(data_dir).resolve()
    digest = hashlib.sha1(str(data_dir).encode()).hexdigest()[:10]
    return cache_root() / "preprocessed" / f"{data_dir.name}-{digest}" / kind
