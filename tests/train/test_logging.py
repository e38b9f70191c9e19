"""MetricsLogger: metrics.jsonl records, readable TensorBoard events, the bar, resume dedupe."""

import glob
import json
import os
import struct

import numpy as np
import pytest
from tensorboardX.proto import event_pb2
from tensorboardX.record_writer import masked_crc32c

from lmjax.train.logging import MetricsLogger, read_metrics


def _read_event_file(path):
    """Returns the Events of a TensorBoard file, checking each record's length and data CRCs."""
    events = []
    with open(path, "rb") as f:
        data = f.read()
    offset = 0
    while offset < len(data):
        header = data[offset : offset + 8]
        (length,) = struct.unpack("Q", header)
        (header_crc,) = struct.unpack("I", data[offset + 8 : offset + 12])
        assert header_crc == masked_crc32c(header), "corrupt record header"
        payload = data[offset + 12 : offset + 12 + length]
        (payload_crc,) = struct.unpack("I", data[offset + 12 + length : offset + 16 + length])
        assert payload_crc == masked_crc32c(payload), "corrupt record payload"
        events.append(event_pb2.Event.FromString(payload))
        offset += 16 + length
    return events


def _scalars(workdir):
    scalars = {}
    for path in glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*")):
        for event in _read_event_file(path):
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_writes_jsonl_and_tensorboard(tmp_path, capsys):
    workdir = str(tmp_path / "run")
    with MetricsLogger(workdir, total_steps=30) as logger:
        logger.log(10, {"loss": np.float32(4.5), "num_tokens": 512, "accuracy": 0.1})
        logger.log(20, {"loss": 3.25, "num_tokens": 512, "tokens_per_sec": 1234.0})
        record = logger.log(20, {"loss": 3.5, "unigram_loss": 5.0}, split="eval")
        logger.log_text(20, "samples", "def foo():")
    assert record["split"] == "eval" and record["loss"] == 3.5
    lines = open(os.path.join(workdir, "metrics.jsonl")).read().splitlines()
    records = [json.loads(line) for line in lines]
    order = [(r["split"], r["step"]) for r in records]
    assert order == [("train", 10), ("train", 20), ("eval", 20)]
    assert records[0]["loss"] == pytest.approx(4.5) and isinstance(records[0]["time"], float)
    assert "tokens_per_sec" not in records[0]  # no earlier record to measure from
    assert records[1]["tokens_per_sec"] == 1234.0

    scalars = _scalars(workdir)
    assert scalars["train/loss"] == [(10, pytest.approx(4.5)), (20, pytest.approx(3.25))]
    assert scalars["eval/loss"] == [(20, pytest.approx(3.5))]
    assert scalars["eval/unigram_loss"] == [(20, pytest.approx(5.0))]
    printed = capsys.readouterr()
    assert "loss=3.2500" in printed.err and "tok/s=1,234" in printed.err  # the bar's postfix
    assert "step 20 eval: loss 3.5000, unigram_loss 5.0000" in printed.out
    assert "def foo():" in printed.out


def test_tokens_per_second_is_derived_from_num_tokens(tmp_path):
    with MetricsLogger(str(tmp_path), total_steps=10, progress_bar=False) as logger:
        logger.log(1, {"loss": 2.0, "num_tokens": 100})
        record = logger.log(3, {"loss": 1.0, "num_tokens": 100})
    assert record["tokens_per_sec"] > 0


def test_rejects_non_scalars_and_reserved_names(tmp_path):
    with MetricsLogger(str(tmp_path), total_steps=10, progress_bar=False) as logger:
        with pytest.raises(ValueError, match="'loss' has shape \\(2,\\); log scalars only"):
            logger.log(1, {"loss": np.zeros(2)})
        with pytest.raises(ValueError, match="'step' is reserved"):
            logger.log(1, {"step": 3})


def test_disabled_logger_writes_nothing(tmp_path):
    workdir = tmp_path / "run"
    logger = MetricsLogger(str(workdir), total_steps=10, enabled=False)
    assert logger.log(1, {"loss": 1.0}) is None
    logger.close()
    assert not workdir.exists()


def test_read_metrics_keeps_the_latest_attempt_after_a_resume(tmp_path):
    with MetricsLogger(str(tmp_path), total_steps=10, progress_bar=False) as logger:
        for step in (1, 2, 3, 4):
            logger.log(step, {"loss": 10.0 - step})
        logger.log(4, {"loss": 9.0}, split="eval")
    # The run died after step 4 and resumes from its step-2 checkpoint.
    with MetricsLogger(str(tmp_path), total_steps=10, progress_bar=False) as logger:
        logger.log(3, {"loss": 0.5})
        logger.log(4, {"loss": 0.25})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"split": "train", "step": 5, "lo')  # torn last line of a killed run
    records = read_metrics(str(tmp_path))
    train = [(r["step"], r["loss"]) for r in records if r["split"] == "train"]
    assert train == [(1, 9.0), (2, 8.0), (3, 0.5), (4, 0.25)]
    assert [(r["step"], r["loss"]) for r in records if r["split"] == "eval"] == [(4, 9.0)]


def test_read_metrics_names_the_fix_when_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="lmjax train --config"):
        read_metrics(str(tmp_path))
