"""Grain pipelines on a tiny dataset written in tmp: row sampling, augmentations and cutmix inside
the v5 training pipeline, determinism, resume, worker processes, model.fit, evaluation order,
spectrogram batches and bad-input errors."""

import itertools
import shutil

import numpy as np
import pandas as pd
import pytest

from hms_keras import constants
from hms_keras.data import montage, pipeline, transforms
from hms_keras.data.cache import EegCache, build_eeg_cache
from hms_keras.data.hms import HmsDataError, HmsLayout, read_eeg, read_spectrogram
from hms_keras.data.labels import first_row_per_spectrogram, sample_eval_rows, v5_targets, vote_targets
from hms_keras.data.preprocess import normalize_spectrogram, spectrogram_window
from hms_keras.tasks.v5_eeg import eeg_inputs

N_TRAIN_EEGS = 12
BATCH = 4


def _write_eeg(path, seconds, rng):
    frames = seconds * constants.RAW_SAMPLING_RATE_HZ
    scale = rng.uniform(10.0, 300.0, 20)  # µV, a different level per channel -> distinct CQFs
    values = (rng.normal(size=(frames, 20)) * scale).astype(np.float32)  # (time, 20) µV
    pd.DataFrame(values, columns=constants.EEG_COLUMNS).to_parquet(path)


def _write_spectrogram(path, rows, rng):
    values = rng.lognormal(0.0, 2.0, (rows, 400)).astype(np.float32)  # (T, 400)
    values[rng.random(values.shape) < 0.01] = np.nan
    frame = pd.DataFrame(values, columns=constants.SPECTROGRAM_COLUMNS)
    frame.insert(0, "time", np.arange(1, 2 * rows, 2, dtype=np.int64))
    frame.to_parquet(path)


def _train_rows(rng):
    rows = []
    for eeg_id in range(N_TRAIN_EEGS):
        seconds = 70 + 2 * eeg_id
        for _ in range(rng.integers(1, 5)):
            votes = rng.integers(0, 15, 6)
            votes[rng.integers(6)] += 1
            rows.append({
                "eeg_id": 1000 + eeg_id,
                "eeg_label_offset_seconds": float(rng.integers(0, 2 * (seconds - 50))) / 2,
                "spectrogram_id": 500 + eeg_id % 3,
                "spectrogram_label_offset_seconds": float(rng.integers(0, 40) * 2),
                **dict(zip(constants.VOTE_COLUMNS, votes, strict=True)),
            })
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A 12-EEG train split (70..92 s, 1-4 label rows each), 2 test EEGs, spectrograms, caches."""
    root = tmp_path_factory.mktemp("hms")
    rng = np.random.default_rng(0)
    for folder in ("train_eegs", "test_eegs", "train_spectrograms", "test_spectrograms"):
        (root / folder).mkdir()
    train_df = _train_rows(rng)
    for eeg_id in range(N_TRAIN_EEGS):
        _write_eeg(root / "train_eegs" / f"{1000 + eeg_id}.parquet", 70 + 2 * eeg_id, rng)
    test_df = pd.DataFrame({"spectrogram_id": [600, 601], "eeg_id": [2000, 2001], "patient_id": [1, 2]})
    for eeg_id in test_df["eeg_id"]:
        _write_eeg(root / "test_eegs" / f"{eeg_id}.parquet", 50, rng)
    for spectrogram_id in (500, 501, 502):
        _write_spectrogram(root / "train_spectrograms" / f"{spectrogram_id}.parquet", 340, rng)
    for spectrogram_id in test_df["spectrogram_id"]:
        _write_spectrogram(root / "test_spectrograms" / f"{spectrogram_id}.parquet", 300, rng)
    layout = HmsLayout(root)
    train_cache = build_eeg_cache(layout, "train", train_df["eeg_id"], cache_dir=root / "cache_train", workers=1)
    test_cache = build_eeg_cache(layout, "test", test_df["eeg_id"], cache_dir=root / "cache_test", workers=1)
    targets = vote_targets(train_df)
    assert not targets.duplicated(list(constants.VOTE_COLUMNS)).any()  # rows identifiable by y
    return {
        "layout": layout, "targets": targets, "test_df": test_df,
        "train_cache": EegCache(train_cache), "test_cache": EegCache(test_cache),
    }


def _train(data, epochs=3, seed=0, schedule=None, worker_count=0):
    schedule = schedule if schedule is not None else [0.0] * epochs
    return pipeline.make_v5_train_dataset(
        data["train_cache"], data["targets"], batch_size=BATCH, seed=seed,
        min_weight_schedule=schedule, worker_count=worker_count,
    )


def _assert_batches_equal(first, second):
    assert len(first) == len(second)
    for (inputs_a, y_a), (inputs_b, y_b) in zip(first, second, strict=True):
        np.testing.assert_array_equal(inputs_a["eeg"], inputs_b["eeg"])
        np.testing.assert_array_equal(inputs_a["mask"], inputs_b["mask"])
        np.testing.assert_array_equal(y_a, y_b)


def _front_end_of_row(data, row, gather):
    """front_end of label row `row`'s window with the probes gathered by `gather` (19,)."""
    targets = data["targets"]
    start = int(targets["eeg_label_offset_seconds"].iloc[row] * 40)
    window = data["train_cache"].window(targets["eeg_id"].iloc[row], start, 2000)
    signal, cqf = transforms.pad_window(window)
    return transforms.front_end(signal[:, gather], cqf[:, gather])


@pytest.fixture(scope="module")
def references(data):
    """{(row, "identity" | "swap"): front_end of the row's window, not or L/R-swapped}."""
    gathers = {"identity": np.arange(19), "swap": montage.MIRROR_INDEX}
    return {
        (row, name): _front_end_of_row(data, row, gather)
        for row in range(len(data["targets"]))
        for name, gather in gathers.items()
    }


# --- row order -----------------------------------------------------------------------------


def test_each_epoch_visits_every_eeg_once_with_a_random_row(data):
    eeg_ids = data["targets"]["eeg_id"].to_numpy()
    rows, steps = pipeline.v5_row_order(eeg_ids, BATCH, seed=0, num_epochs=20)
    assert steps == N_TRAIN_EEGS // BATCH
    epochs = np.array(list(rows)).reshape(20, steps * BATCH)  # (epochs, items)
    for epoch in epochs:
        assert len(set(eeg_ids[epoch])) == steps * BATCH  # no EEG twice in an epoch
    assert len({tuple(eeg_ids[epoch]) for epoch in epochs}) == 20  # a new order each epoch
    # each EEG's rows only, and over 20 epochs every one of them
    drawn = pd.Series(epochs.ravel()).groupby(eeg_ids[epochs.ravel()]).unique()
    assert len(drawn) == N_TRAIN_EEGS
    for eeg_id, seen in drawn.items():
        assert set(seen) == set(np.flatnonzero(eeg_ids == eeg_id))
    assert (data["targets"].groupby("eeg_id").size() > 1).sum() >= 6  # the check means something


def test_epoch_order_drops_the_partial_batch_per_epoch():
    order, steps = pipeline.epoch_order(10, 4, seed=1, num_epochs=3)
    assert steps == 2 and len(order) == 24
    with pytest.raises(ValueError, match="fewer than one batch"):
        pipeline.epoch_order(3, 4, seed=1, num_epochs=1)


def test_rows_by_eeg_groups_rows_in_first_appearance_order():
    groups = pipeline.rows_by_eeg(np.array([7, 3, 7, 5, 3, 7]))
    assert [list(group) for group in groups] == [[0, 2, 5], [1, 4], [3]]


# --- training batches ----------------------------------------------------------------------


def test_train_batches_layout_and_threshold_schedule(data):
    dataset, steps = _train(data, epochs=3, schedule=[0.0, 0.2, 0.5])
    batches = list(dataset)
    assert steps == 3 and len(batches) == 9
    for k, (inputs, y) in enumerate(batches):
        assert set(inputs) == {"eeg", "mask"}
        assert inputs["eeg"].shape == inputs["mask"].shape == (BATCH, 512, 18)
        assert inputs["eeg"].dtype == inputs["mask"].dtype == y.dtype == np.float32
        assert y.shape == (BATCH, 2, 8)
        np.testing.assert_allclose(y[..., :6].sum(-1), 1.0, rtol=1e-5)
        assert (np.abs(inputs["eeg"]) <= 1.0).all()
        assert ((inputs["mask"] > 0) & (inputs["mask"] <= 1)).all()
        np.testing.assert_array_equal(y[..., 7], np.float32([0.0, 0.2, 0.5][k // steps]))


def test_augmentations_inside_the_pipeline(data, references):
    """Batches whose y are exact label rows had no cutmix; their samples are the front end of
    that row's window, unchanged, L/R-swapped or permuted, with cut-outs visible only in eeg."""
    targets = data["targets"]
    row_y = v5_targets(targets)[:, :, :7].reshape(len(targets), -1)  # (rows, 14)
    kinds, cutmix_batches, n_batches = [], 0, 0
    dataset, _ = _train(data, epochs=40)
    for inputs, y in dataset:
        n_batches += 1
        matches = (y[:, :, :7].reshape(BATCH, 1, -1) == row_y[None]).all(-1)  # (B, rows)
        if not matches.any(-1).all():
            cutmix_batches += 1
            continue
        for i, row in enumerate(matches.argmax(-1)):
            for name in ("identity", "swap"):
                reference = references[row, name]
                if np.array_equal(inputs["mask"][i], reference["mask"]):
                    cut = not np.array_equal(inputs["eeg"][i], reference["eeg"])
                    kinds.append(name + ("+cutout" if cut else ""))
                    break
            else:
                kinds.append("permuted")
    kinds = pd.Series(kinds).value_counts(normalize=True)
    assert 0.35 < cutmix_batches / n_batches < 0.65
    plain = kinds.get("identity", 0) + kinds.get("identity+cutout", 0)
    swapped = kinds.get("swap", 0) + kinds.get("swap+cutout", 0)
    assert 0.25 < plain < 0.45 and 0.25 < swapped < 0.45  # 0.5 * 0.7 each
    assert 0.18 < kinds.get("permuted", 0) < 0.42  # 0.3
    cut = (kinds.get("identity+cutout", 0) + kinds.get("swap+cutout", 0)) / (plain + swapped)
    assert 0.15 < cut < 0.45  # 0.3, less the rare cut-outs that all fall after the crop


def _label_pair(y_i, y_partner, row_y):
    """The rows (a, b) and λ with y_i = λ a + (1 - λ) b and y_partner = λ b + (1 - λ) a."""
    sums = row_y[:, None] + row_y[None]  # (rows, rows, 14)
    a, b = np.argwhere(np.abs(sums - (y_i + y_partner)).max(-1) < 1e-5)[0]
    direction = row_y[a] - row_y[b]  # (14,)
    lam = float(np.dot(y_i - row_y[b], direction) / np.dot(direction, direction))
    np.testing.assert_allclose(y_i, lam * row_y[a] + (1 - lam) * row_y[b], atol=1e-5)
    return a, b, lam


def _segment_explains(mask, own, partner, length):
    """True when mask (512, 18) equals `partner` on one run of `length` frames and `own` elsewhere."""
    own_ok = (mask == own).all(-1)  # (512,)
    partner_runs = np.concatenate([[0], np.cumsum((mask == partner).all(-1))])  # (513,)
    starts = np.arange(512 - length + 1)  # (starts,)
    partner_inside = partner_runs[starts + length] - partner_runs[starts] == length  # (starts,)
    not_own = np.flatnonzero(~own_ok)
    if len(not_own):
        partner_inside &= (starts <= not_own[0]) & (starts + length > not_own[-1])
    return bool(partner_inside.any())


def test_cutmix_inside_the_pipeline_mixes_reversed_partners(data, references):
    """In every batch the labels are λ-mixtures of two rows for pairs (i, B-1-i), one λ per
    batch; where both samples were not channel-permuted the mask shows one segment of
    int(512 (1 - λ)) frames taken from the partner."""
    row_y = v5_targets(data["targets"])[:, :, :7].reshape(len(data["targets"]), -1)  # (rows, 14)
    gathers = ("identity", "swap")
    explained = checked = 0
    for inputs, y in _train(data, epochs=20)[0]:
        y = y[:, :, :7].reshape(BATCH, -1)  # (B, 14)
        pairs = [_label_pair(y[i], y[BATCH - 1 - i], row_y) for i in range(BATCH // 2)]
        lams = [lam for _, _, lam in pairs]
        assert np.isclose(lams[0], lams[1], atol=1e-4) or np.isclose(lams[0], 1 - lams[1], atol=1e-4)
        if all(abs(lam - 1) < 1e-6 for lam in lams):
            continue  # no cutmix in this batch
        for i, (a, b, lam) in enumerate(pairs):
            checked += 1
            candidates = itertools.product((a, b), gathers, gathers)
            explained += any(
                _segment_explains(
                    inputs["mask"][i],
                    references[own, own_gather]["mask"],
                    references[a + b - own, partner_gather]["mask"],
                    int(512 * (1 - (lam if own == a else 1 - lam))),
                )
                for own, own_gather, partner_gather in candidates
            )
    assert checked > 20
    assert 0.3 < explained / checked < 0.75  # both of the pair not permuted: 0.7 ** 2


# --- determinism, resume, workers ------------------------------------------------------------


def test_same_seed_same_batches_other_seed_other_batches(data):
    first = list(_train(data, seed=3)[0])
    _assert_batches_equal(first, list(_train(data, seed=3)[0]))
    other = list(_train(data, seed=4)[0])
    assert not np.array_equal(first[0][0]["eeg"], other[0][0]["eeg"])


def test_iterator_resumes_mid_epoch_with_identical_batches(data):
    dataset, _ = _train(data, epochs=3)
    iterator = iter(dataset)
    for _ in range(4):
        next(iterator)
    state = iterator.get_state()
    expected = list(itertools.islice(iterator, 4))
    resumed = iter(_train(data, epochs=3)[0])
    resumed.set_state(state)
    _assert_batches_equal(list(itertools.islice(resumed, 4)), expected)


def test_worker_processes_give_the_same_batches(data):
    expected = list(itertools.islice(_train(data, schedule=[0.1, 0.7])[0], 4))  # 3 steps per epoch
    got = list(itertools.islice(_train(data, schedule=[0.1, 0.7], worker_count=1)[0], 4))
    assert expected[3][1][0, 0, 7] == np.float32(0.7)
    _assert_batches_equal(got, expected)


# --- model.fit -----------------------------------------------------------------------------


def test_model_fit_consumes_train_and_eval_datasets(data):
    import keras

    eeg = keras.Input((512, 18), name="eeg")
    mask = keras.Input((512, 18), name="mask")
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Concatenate()([eeg, mask]))  # (B, 36)
    logits = keras.layers.Reshape((2, 6))(keras.layers.Dense(12)(pooled))  # (B, 2, 6)
    model = keras.Model({"eeg": eeg, "mask": mask}, logits)

    def loss(y_true, y_pred):  # cross-entropy against both heads' probabilities
        return -keras.ops.sum(y_true[..., :6] * keras.ops.log_softmax(y_pred, axis=-1), axis=(-2, -1))

    model.compile(optimizer="adam", loss=loss)
    train, steps = _train(data, epochs=2)
    eval_rows = sample_eval_rows(data["targets"])
    validation, rows = pipeline.make_v5_eval_dataset(data["train_cache"], eval_rows, batch_size=BATCH)
    history = model.fit(train, epochs=2, steps_per_epoch=steps, validation_data=validation, verbose=0)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["val_loss"]).all()
    predictions = model.predict(validation, verbose=0)
    assert predictions.shape == (len(rows), 2, 6)


# --- evaluation ----------------------------------------------------------------------------


def test_eval_dataset_is_the_unaugmented_front_end_in_row_order(data, references):
    rows = sample_eval_rows(data["targets"], rows_per_eeg=2, seed=5)
    dataset, order = pipeline.make_v5_eval_dataset(data["train_cache"], rows, batch_size=BATCH)
    batches = list(dataset)
    assert order["row"].tolist() == rows["row"].tolist()
    assert [len(y) for _, y in batches][:-1] == [BATCH] * (len(batches) - 1)
    assert sum(len(y) for _, y in batches) == len(rows)  # last batch partial, nothing dropped
    eeg = np.concatenate([inputs["eeg"] for inputs, _ in batches])  # (rows, 512, 18)
    y = np.concatenate([y for _, y in batches])  # (rows, 2, 8)
    for i, row in enumerate(order["row"]):
        np.testing.assert_array_equal(eeg[i], references[row, "identity"]["eeg"])
    np.testing.assert_array_equal(y, v5_targets(data["targets"].loc[order["row"]]))
    assert not y[..., 7].any()
    _assert_batches_equal(batches, list(dataset))  # deterministic on a second pass


def test_eval_on_test_eegs_reads_the_window_from_frame_zero(data):
    dataset, order = pipeline.make_v5_eval_dataset(data["test_cache"], data["test_df"], batch_size=BATCH)
    (inputs,) = list(dataset)  # no labels: the inputs dict alone
    assert set(inputs) == {"eeg", "mask"} and inputs["eeg"].shape == (2, 512, 18)
    window = data["test_cache"].window(order["eeg_id"].iloc[1], 0, 2000)
    np.testing.assert_array_equal(inputs["eeg"][1], transforms.front_end(*transforms.pad_window(window))["eeg"])


def test_eeg_inputs_of_a_raw_recording_equal_the_eval_pipeline_inputs(data):
    rows = data["targets"].iloc[:BATCH]
    ((inputs, _),) = list(pipeline.make_v5_eval_dataset(data["train_cache"], rows, batch_size=BATCH)[0])
    for i, (_, row) in enumerate(rows.iterrows()):
        raw = read_eeg(data["layout"].eeg_path("train", row["eeg_id"]))  # (time, 20) µV
        single = eeg_inputs(raw, row["eeg_label_offset_seconds"])  # {"eeg", "mask"}: (1, 512, 18) each
        for name in ("eeg", "mask"):
            np.testing.assert_array_equal(single[name][0], inputs[name][i], err_msg=f"row {i} {name}")


# --- spectrograms ----------------------------------------------------------------------------


def test_spectrogram_train_batches(data):
    dataset, steps = pipeline.make_spectrogram_train_dataset(
        data["layout"], data["targets"], batch_size=2, seed=0, num_epochs=2
    )
    batches = list(dataset)
    assert steps == 1 and len(batches) == 2  # 3 spectrograms -> one batch of 2 per epoch
    images, y = batches[0]
    assert images.shape == (2, 400, 300, 1) and images.dtype == np.float32 and y.shape == (2, 6)
    np.testing.assert_allclose(images.mean(axis=(1, 2, 3)), 0.0, atol=1e-4)
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-6)


def test_spectrogram_eval_images_in_row_order(data):
    first = first_row_per_spectrogram(data["targets"])
    dataset, order = pipeline.make_spectrogram_eval_dataset(data["layout"], first, batch_size=2)
    images = np.concatenate([images for images, _ in dataset])  # (3, 400, 300, 1)
    assert order["spectrogram_id"].tolist() == first["spectrogram_id"].tolist() == [500, 501, 502]
    for image, (_, row) in zip(images, first.iterrows(), strict=True):
        path = data["layout"].spectrogram_path("train", row["spectrogram_id"])
        _, values = read_spectrogram(path)
        expected = normalize_spectrogram(spectrogram_window(values, row["spectrogram_label_offset_seconds"]))
        np.testing.assert_array_equal(image[..., 0], expected)
    test_dataset, _ = pipeline.make_spectrogram_eval_dataset(data["layout"], data["test_df"], split="test")
    (test_images,) = list(test_dataset)
    assert test_images.shape == (2, 400, 300, 1)


# --- bad input -----------------------------------------------------------------------------


def test_missing_eeg_fails_when_the_dataset_is_made(data):
    targets = data["targets"].copy()
    targets.loc[0, "eeg_id"] = 4242
    with pytest.raises(HmsDataError, match="4242.*build_eeg_cache"):
        _train({**data, "targets": targets})
    with pytest.raises(HmsDataError, match="4242.*build_eeg_cache"):
        pipeline.make_v5_eval_dataset(data["train_cache"], targets)


def test_window_outside_the_recording_fails_when_the_dataset_is_made(data):
    targets = data["targets"].copy()
    targets.loc[0, "eeg_label_offset_seconds"] = 500.0
    with pytest.raises(HmsDataError, match="window starts at frame 20000"):
        _train({**data, "targets": targets})


def test_missing_spectrogram_file_fails_when_the_dataset_is_made(data):
    targets = data["targets"].copy()
    targets.loc[0, "spectrogram_id"] = 999
    with pytest.raises(HmsDataError, match="999.parquet"):
        pipeline.make_spectrogram_train_dataset(data["layout"], targets, batch_size=2, num_epochs=1)


def test_a_spectrogram_with_wrong_column_names_fails_when_the_dataset_is_made(data, tmp_path):
    root = shutil.copytree(data["layout"].data_dir, tmp_path / "hms", ignore=shutil.ignore_patterns("cache_*"))
    bad = root / "train_spectrograms" / "501.parquet"
    frame = pd.read_parquet(bad).rename(columns={"LL_3.13": "LL_3.12"})  # Python's round(), not Kaggle's names
    frame.to_parquet(bad)
    with pytest.raises(HmsDataError, match=r"501.parquet: unknown column 'LL_3.12' \(did you mean 'LL_3.13'\?\)"):
        pipeline.make_spectrogram_train_dataset(HmsLayout(root), data["targets"], batch_size=2, num_epochs=1)
