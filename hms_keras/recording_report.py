"""A report of one recording's sliding-window predictions that opens offline in any browser:
`index.html`, `windows.csv` and PNG figures (matplotlib, Agg) next to it, no script, no network.

    write_report(out_dir, windows, prepared, recording="night.edf", models="15 v5_eeg_cutmix models")

Figures: the six class probabilities at each window's centre over the whole recording; for each
class its most probable windows drawn as the 18 double-banana channels the raters read (50 s,
the labelled central 10 s shaded), from the signal the model sees (40 Hz, 0.5 Hz high-pass, mV
clipped at ±1); the channel quality factor of the 19 electrodes over time.
"""

import html
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # no pyplot: figures drawn straight to files, no display or global state

from hms_keras import constants
from hms_keras.data.cache import recording_window
from hms_keras.data.montage import bipolar_signal
from hms_keras.data.transforms import highpass_clip

LABELLED_CENTRE_S = (20, 30)  # the 10 s of a 50 s window the raters' votes are about
CLASS_COLOURS = ("#d62728", "#ff7f0e", "#9467bd", "#1f77b4", "#17becf", "#7f7f7f")  # CLASSES order
CQF_BIN_S = 10  # the CQF figure shows one mean per electrode per 10 s
TRACE_SPACING_MV = 0.25  # vertical distance between two channels' zero lines
_BIPOLAR_NAMES = tuple(f"{anode}-{cathode}" for anode, cathode in constants.BIPOLAR_PAIRS)


def top_windows(windows: pd.DataFrame, per_class: int) -> dict[str, pd.DataFrame]:
    """{class: its `per_class` windows of highest probability, best first}, windows that overlap
    a better one of the same class skipped (so they show different stretches of the recording)."""
    chosen = {}
    for name in constants.CLASSES:
        picked = []
        for index in windows[name].sort_values(ascending=False).index:
            start = windows.at[index, "start_s"]
            if all(abs(start - windows.at[other, "start_s"]) >= constants.WINDOW_SECONDS for other in picked):
                picked.append(index)
            if len(picked) == per_class:
                break
        chosen[name] = windows.loc[picked]
    return chosen


def _time_axis(seconds: np.ndarray) -> tuple[np.ndarray, str]:
    """Seconds -> minutes or hours for a recording's time axis, with the unit's label."""
    if seconds.max(initial=0) > 3 * 3600:
        return seconds / 3600, "time (h)"
    if seconds.max(initial=0) > 180:
        return seconds / 60, "time (min)"
    return seconds, "time (s)"


def plot_probabilities(windows: pd.DataFrame, path: Path) -> Path:
    """The six class probabilities at each window's centre over the recording, one panel each."""
    time, unit = _time_axis(windows["centre_s"].to_numpy())
    figure = Figure(figsize=(12, 7))
    axes = figure.subplots(constants.NUM_CLASSES, 1, sharex=True, sharey=True)
    for axis, name, colour in zip(axes, constants.CLASSES, CLASS_COLOURS, strict=True):
        axis.fill_between(time, windows[name].to_numpy(), color=colour, alpha=0.35, linewidth=0)
        axis.plot(time, windows[name].to_numpy(), color=colour, linewidth=0.8)
        axis.set_ylim(0, 1)
        axis.set_ylabel(name, rotation=0, ha="right", va="center")
        axis.grid(alpha=0.3)
    axes[-1].set_xlabel(unit)
    axes[0].set_title("class probabilities of each 50 s window, at its centre")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    return path


def plot_window(prepared: np.ndarray, start_s: float, title: str, path: Path) -> Path:
    """The 18 double-banana channels of the 50 s window starting `start_s` into a prepared
    recording ((frames, 2, 19) at 40 Hz, `cache.preprocess_recording`), the central 10 s shaded."""
    start = int(start_s * constants.SAMPLING_RATE_HZ + 1e-6)
    window = recording_window(prepared, start, constants.WINDOW_FRAMES)  # (2000, 2, 19) float32
    traces = highpass_clip(bipolar_signal(window[:, 0]))  # (2000, 18) mV
    seconds = np.arange(constants.WINDOW_FRAMES) / constants.SAMPLING_RATE_HZ  # (2000,)
    offsets = -TRACE_SPACING_MV * np.arange(constants.NUM_BIPOLAR)  # (18,) channel 0 on top
    figure = Figure(figsize=(12, 6.5))
    axis = figure.subplots()
    axis.axvspan(*LABELLED_CENTRE_S, color="#ffe9a8", zorder=0, label="labelled 10 s")
    axis.plot(seconds, traces + offsets, color="black", linewidth=0.5)
    axis.set_yticks(offsets, _BIPOLAR_NAMES, fontsize=8)
    axis.set_ylim(offsets[-1] - TRACE_SPACING_MV, TRACE_SPACING_MV)
    axis.set_xlim(0, constants.WINDOW_SECONDS)
    axis.set_xlabel(f"seconds after {start_s:.0f} s (scale: {TRACE_SPACING_MV * 1000:.0f} µV between lines)")
    axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    return path


def plot_channel_quality(prepared: np.ndarray, path: Path) -> Path:
    """The CQF of the 19 electrodes over the recording, one mean per CQF_BIN_S seconds."""
    bin_frames = CQF_BIN_S * constants.SAMPLING_RATE_HZ
    bins = max(len(prepared) // bin_frames, 1)
    cqf = np.asarray(prepared[: bins * bin_frames, 1], np.float32)  # (frames', 19)
    means = cqf.reshape(bins, -1, cqf.shape[1]).mean(axis=1)  # (bins, 19)
    hours, unit = _time_axis(np.array([bins * CQF_BIN_S]))
    figure = Figure(figsize=(12, 4.5))
    axis = figure.subplots()
    image = axis.imshow(means.T, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest",
                        extent=(0, hours[0], len(constants.EEG_PROBES) - 0.5, -0.5))
    axis.set_yticks(range(len(constants.EEG_PROBES)), constants.EEG_PROBES, fontsize=8)
    axis.set_xlabel(unit)
    axis.set_title(f"channel quality factor (mean per {CQF_BIN_S} s; near 0: the model ignores the electrode)")
    figure.colorbar(image, ax=axis, fraction=0.03)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    return path


def write_report(out_dir, windows: pd.DataFrame, prepared: np.ndarray, *, recording: str, models: str,
                 channels: dict[str, str | None] | None = None, per_class: int = 2) -> Path:
    """Write `index.html`, `windows.csv` and the figures into `out_dir` (created); returns the
    HTML file's path.

    windows: `sliding_windows.predict_recording`'s table; prepared: the same recording as
    (frames, 2, 19) at 40 Hz (`cache.preprocess_recording`); recording, models: what the page
    says was predicted and by what; channels: {electrode: file channel or None}
    (`recordings.recording_channels`), listed when given; per_class: windows drawn per class.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    windows.to_csv(out_dir / "windows.csv", index=False, float_format="%.6g")
    plot_probabilities(windows, out_dir / "probabilities.png")
    plot_channel_quality(prepared, out_dir / "channel_quality.png")
    sections = []
    for name, top in top_windows(windows, per_class).items():
        figures = []
        for rank, (_, row) in enumerate(top.iterrows(), start=1):
            title = f"{name} {row[name]:.2f}: window {row['start_s']:.0f}-{row['end_s']:.0f} s"
            image = plot_window(prepared, row["start_s"], title, out_dir / f"top_{name}_{rank}.png")
            figures.append(f'<figure><img src="{image.name}" alt="{html.escape(title)}" width="960">'
                           f"<figcaption>{html.escape(title)}</figcaption></figure>")
        sections.append(f"<h3>{name}</h3>\n" + "\n".join(figures))
    seconds = float(windows["end_s"].max())
    summary = windows[list(constants.CLASSES)].agg(["mean", "max"]).T
    summary_rows = "".join(f"<tr><td>{name}</td><td>{row['mean']:.3f}</td><td>{row['max']:.3f}</td></tr>"
                           for name, row in summary.iterrows())
    channel_rows = ""
    if channels is not None:
        channel_rows = "<h2>Channels</h2><table><tr><th>electrode</th><th>file channel</th></tr>" + "".join(
            f"<tr><td>{electrode}</td><td>{html.escape(found) if found else '<b>missing (marked bad)</b>'}</td></tr>"
            for electrode, found in channels.items()) + "</table>"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>EEG report: {html.escape(recording)}</title>
<style>body {{font-family: sans-serif; max-width: 1000px; margin: 1em auto; color: #222}}
table {{border-collapse: collapse}} td, th {{border: 1px solid #ccc; padding: 2px 8px; text-align: left}}
figure {{margin: 0.5em 0}} figcaption {{font-size: 0.9em; color: #555}}</style></head>
<body>
<h1>{html.escape(recording)}</h1>
<p>{seconds / 60:.1f} min of EEG, {len(windows)} windows of {constants.WINDOW_SECONDS} s predicted by
{html.escape(models)}.
Each probability is about the central 10 s of its window. Not a diagnosis: a research model's output.
All windows: <a href="windows.csv">windows.csv</a>.</p>
<h2>Class probabilities over the recording</h2>
<img src="probabilities.png" alt="class probabilities over time" width="960">
<table><tr><th>class</th><th>mean probability</th><th>highest</th></tr>{summary_rows}</table>
<h2>Most probable windows of each class</h2>
<p>The 18 bipolar (double-banana) channels as the model sees them: 40 Hz, 0.5 Hz high-pass, clipped at
±1 mV. Shaded: the labelled central 10 s.</p>
{chr(10).join(sections)}
<h2>Channel quality</h2>
<img src="channel_quality.png" alt="channel quality factor over time" width="960">
{channel_rows}
</body></html>
"""
    index = out_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
