"""A PNG of a run's train and eval loss against the step, with the unigram baseline.

``lmjax plot <workdir>`` and the end of :func:`lmjax.train.loop.train` call :func:`plot_metrics`,
which reads ``<workdir>/metrics.jsonl`` (see :mod:`lmjax.train.logging`) and draws:

* the train loss of every logged step (faint) and its centred moving average (solid);
* the eval loss at each evaluation (markers joined by a line);
* the unigram baseline (a dashed horizontal line) when a record carries ``unigram_loss``: the
  cross-entropy of a model that ignores the context, which a trained LM must clearly beat.

The figure is drawn by Matplotlib's Agg canvas without pyplot, so it runs on a headless machine
and leaves the process's pyplot backend alone (a notebook keeps showing its own figures inline).
"""

from __future__ import annotations

import os

from lmjax.train.logging import UNIGRAM_KEY, read_metrics

PLOT_FILE = "loss.png"


def loss_curves(records: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """Returns ``{split: [(step, loss), ...]}`` for every split that logged a ``loss``."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for record in records:
        if "loss" in record and isinstance(record["loss"], (int, float)):
            curves.setdefault(record.get("split", "train"), []).append(
                (int(record["step"]), float(record["loss"]))
            )
    for points in curves.values():
        points.sort()
    return curves


def unigram_baseline(records: list[dict]) -> float | None:
    """Returns the last ``unigram_loss`` any record carries, or None."""
    values = [
        float(r[UNIGRAM_KEY]) for r in records if isinstance(r.get(UNIGRAM_KEY), (int, float))
    ]
    return values[-1] if values else None


def centered_moving_average(values: list[float], window: int) -> list[float]:
    """Returns the mean of each value's ``window`` neighbours (fewer at the ends); no lag."""
    half = max(0, window // 2)
    prefix = [0.0]
    for value in values:
        prefix.append(prefix[-1] + value)
    averaged = []
    for index in range(len(values)):
        lo, hi = max(0, index - half), min(len(values), index + half + 1)
        averaged.append((prefix[hi] - prefix[lo]) / (hi - lo))
    return averaged


def plot_metrics(workdir: str, out_path: str | None = None) -> str:
    """Writes a PNG of the run's loss curves and returns its path.

    Args:
        workdir: a run directory with a ``metrics.jsonl``.
        out_path: where to write the PNG; defaults to ``<workdir>/loss.png``.

    Returns:
        The path of the written PNG.

    Raises:
        FileNotFoundError: if ``workdir`` has no metrics file.
        ValueError: if no record has a ``loss`` to plot.
    """
    records = read_metrics(workdir)
    curves = loss_curves(records)
    if not curves:
        raise ValueError(
            f"{os.path.join(workdir, 'metrics.jsonl')} has no 'loss' values to plot yet; let the "
            "run log at least one step (config.train.log_every)."
        )
    out_path = out_path or os.path.join(workdir, PLOT_FILE)
    out_dir = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(out_dir, exist_ok=True)

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for split, points in sorted(curves.items(), key=lambda item: item[0] != "train"):
        steps = [s for s, _ in points]
        losses = [v for _, v in points]
        if split == "train":
            window = 2 * (len(points) // 25) + 1  # about 4% of the points on each side
            axes.plot(steps, losses, color="tab:blue", alpha=0.3 if window > 1 else 1.0,
                      linewidth=1, label="train" if window == 1 else "train (raw)")
            if window > 1:
                axes.plot(steps, centered_moving_average(losses, window), color="tab:blue",
                          linewidth=2, label=f"train (mean of {window} logs)")
        else:
            color = "tab:orange" if split == "eval" else None
            axes.plot(steps, losses, marker="o", markersize=4, linewidth=1.5, label=split,
                      color=color)
    baseline = unigram_baseline(records)
    if baseline is not None:
        axes.axhline(baseline, color="gray", linestyle="--", linewidth=1.2,
                     label=f"unigram baseline ({baseline:.3f})")
    axes.set_xlabel("step")
    axes.set_ylabel("loss (nats / token)")
    axes.set_title(os.path.basename(os.path.normpath(os.path.abspath(workdir))))
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    tmp_path = out_path + ".tmp.png"
    figure.savefig(tmp_path, format="png")
    os.replace(tmp_path, out_path)  # a reader never sees a half-written PNG
    return out_path
