"""`python -m recipes.annotate`: a whole EDF recording through a run folder into an offline report
(index.html, windows.csv, figures), its one-line user errors, and (slow) the page rendered by
headless Chromium."""

import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from recording_runs import write_tiny_runs, write_two_member_ensemble

from hms_keras import constants
from hms_keras.data.synthetic.recording_files import NEW_10_20_NAMES, long_recording, write_recording
from hms_keras.sliding_windows import PREDICTION_COLUMNS
from recipes import annotate

pytest.importorskip("mne", reason="the eeg extra (mne, edfio) is not installed")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A 4-minute 256 Hz EDF with the new 10-20 names, annotated by two tiny v5 runs at stride 20 s."""
    root = tmp_path_factory.mktemp("annotate")
    runs = write_tiny_runs(root / "runs" / "tiny_v5")
    recording = write_recording(root / "night.edf", long_recording(240, seed=2), NEW_10_20_NAMES, 256)
    out = root / "report"
    status = annotate.main(["--runs", str(runs), "--recording", str(recording), "--out", str(out),
                            "--stride", "20", "--top", "1"])
    return {"status": status, "out": out, "runs": runs, "recording": recording, "root": root}


def test_annotate_writes_an_offline_report_with_every_window_and_figure(report):
    assert report["status"] == 0
    out = report["out"]
    windows = pd.read_csv(out / "windows.csv")
    assert list(windows.columns) == list(PREDICTION_COLUMNS)
    np.testing.assert_allclose(windows["start_s"], [0, 20, 40, 60, 80, 100, 120, 140, 160, 180, 190])
    np.testing.assert_allclose(windows[list(constants.CLASSES)].sum(axis=1), 1.0, atol=1e-5)
    page = (out / "index.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', page)
    assert "probabilities.png" in images and "channel_quality.png" in images
    assert sorted(name for name in images if name.startswith("top_")) == sorted(
        f"top_{name}_1.png" for name in constants.CLASSES)
    for name in images:  # every figure is a real PNG next to the page
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / name).stat().st_size > 10_000
    best_seizure = windows.loc[windows["seizure"].idxmax()]
    assert f"seizure {best_seizure['seizure']:.2f}: window {best_seizure['start_s']:.0f}-" in page
    assert "<td>T5</td><td>EEG P7-REF</td>" in page  # the channel each electrode was read from
    assert not re.search(r"(src|href)=\"(https?:)?//|<script", page)  # nothing fetched, nothing run


def test_annotate_user_errors_are_one_line(report, tmp_path, capsys):
    few = write_recording(tmp_path / "few.edf", long_recording(60, seed=1)[:, :18], constants.EEG_COLUMNS[:18])
    arguments = ["--runs", str(report["runs"]), "--out", str(tmp_path / "out")]
    for recording, expected in [
        (tmp_path / "absent.edf", "absent.edf: file not found; check --recording"),
        (few, r"few.edf: missing electrode\(s\) O2; found channels Fp1, .* pass --allow-missing"),
    ]:
        assert annotate.main([*arguments, "--recording", str(recording)]) == 2
        error = capsys.readouterr().err
        assert re.fullmatch(rf"error: .*{expected}.*\n", error), error
    assert annotate.main([*arguments, "--recording", str(report["recording"]), "--stride", "0"]) == 2
    assert "--stride 0.0: must be positive" in capsys.readouterr().err
    blend = write_two_member_ensemble(tmp_path / "blend.json", report["runs"])
    with pytest.warns(UserWarning, match=r"electrode\(s\) O2 missing"):
        assert annotate.main(["--ensemble", str(blend), "--out", str(tmp_path / "out"), "--recording", str(few),
                              "--allow-missing"]) == 0
    assert "<td>O2</td><td><b>missing (marked bad)</b></td>" in (tmp_path / "out" / "index.html").read_text()
    assert f"2 model(s) of {blend}" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium to render the report (apt-get install chromium)")
def test_headless_chromium_renders_the_report_offline(report):
    screenshot = report["root"] / "report.png"
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
         # no network here: without these, Chromium's own background connections are refused at every start
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
         f"--user-data-dir={report['root'] / 'chromium-profile'}",
         f"--screenshot={screenshot}", "--window-size=1100,2400", (report["out"] / "index.html").as_uri()],
        check=True, timeout=120, capture_output=True,
    )
    from matplotlib.image import imread

    pixels = imread(screenshot)  # (2400, 1100, channels) floats in [0, 1]
    assert pixels.shape[:2] == (2400, 1100)
    # the figures were drawn: many non-white, non-grey pixels (the class colours), not a blank page
    colourful = (pixels[..., :3].max(axis=-1) - pixels[..., :3].min(axis=-1)) > 0.2
    assert colourful.mean() > 0.01
