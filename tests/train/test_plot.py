"""plot_metrics: a valid PNG of train / eval loss with the unigram baseline."""

import json
import os
import struct
import zlib

import pytest

from lmjax.train.logging import MetricsLogger
from lmjax.train.plot import loss_curves, plot_metrics, unigram_baseline

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(path):
    """Returns (width, height) after checking the signature and every chunk's CRC."""
    data = open(path, "rb").read()
    assert data[:8] == _PNG_SIGNATURE
    offset, chunks = 8, []
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, f"bad CRC in {kind!r}"
        chunks.append(kind)
        offset += 12 + length
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND" and b"IDAT" in chunks
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _write_run(workdir, steps=40):
    with MetricsLogger(workdir, total_steps=steps, progress_bar=False) as logger:
        for step in range(1, steps + 1):
            logger.log(step, {"loss": 6.0 / step ** 0.3})
            if step % 10 == 0:
                logger.log(step, {"loss": 6.2 / step ** 0.3, "unigram_loss": 5.5}, split="eval")


def test_plot_writes_a_valid_png(tmp_path):
    workdir = str(tmp_path / "run")
    _write_run(workdir)
    path = plot_metrics(workdir)
    assert path == os.path.join(workdir, "loss.png")
    assert _png_size(path) == (800, 500)
    other = plot_metrics(workdir, out_path=str(tmp_path / "plots" / "curve.png"))
    assert _png_size(other) == (800, 500)
    assert not [n for n in os.listdir(workdir) if n.endswith(".tmp.png")]


def test_curves_and_baseline_from_records(tmp_path):
    workdir = str(tmp_path)
    _write_run(workdir, steps=20)
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    curves = loss_curves(records)
    assert [s for s, _ in curves["eval"]] == [10, 20]
    assert len(curves["train"]) == 20
    assert unigram_baseline(records) == 5.5
    assert unigram_baseline([{"step": 1, "loss": 2.0}]) is None


def test_plot_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="No metrics.jsonl"):
        plot_metrics(str(tmp_path))
    (tmp_path / "metrics.jsonl").write_text('{"split": "train", "step": 1, "accuracy": 0.5}\n')
    with pytest.raises(ValueError, match="no 'loss' values"):
        plot_metrics(str(tmp_path))


def test_plot_leaves_the_pyplot_backend_alone(tmp_path):
    import matplotlib

    workdir = str(tmp_path / "run")
    _write_run(workdir, steps=3)
    previous = matplotlib.get_backend()
    matplotlib.use("pdf")  # a notebook's inline backend stands for any other one here
    try:
        _png_size(plot_metrics(workdir))
        assert matplotlib.get_backend() == "pdf"
    finally:
        matplotlib.use(previous)
