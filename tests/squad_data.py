"""Real TFDS ``squad/v1.1`` / ``squad/v2.0`` preparations of hand-written SQuAD JSON files.

The TFDS builder is run as ``tfds build`` would run it, array_record output included; only its
download manager is patched to hand back local files instead of fetching the official ones.
Shared by the SQuAD reader tests and the SQuAD fine-tuning tests.
"""

from __future__ import annotations

import json
import os
import sys

import pytest
import tensorflow_datasets as tfds

__all__ = ["prepared_squad_data_dir", "qa", "squad_json"]


def qa(qid, question, *answers, impossible=None, plausible=()):
    """One question of a SQuAD JSON file; ``answers`` are ``(text, answer_start)`` pairs and
    ``impossible`` (SQuAD 2.0 only) sets ``is_impossible``."""
    record = {"id": qid, "question": question,
              "answers": [{"text": text, "answer_start": start} for text, start in answers]}
    if impossible is not None:
        record["is_impossible"] = impossible
        if plausible:
            record["plausible_answers"] = [{"text": t, "answer_start": s} for t, s in plausible]
    return record


def squad_json(version, articles):
    """A SQuAD JSON file: ``articles`` are ``(title, context, [qa(...), ...])``, one paragraph
    each."""
    return json.dumps({"version": version, "data": [
        {"title": title, "paragraphs": [{"context": context, "qas": qas}]}
        for title, context, qas in articles
    ]}, ensure_ascii=False)


def prepared_squad_data_dir(files, files_dir, data_dir, versions=("v1.1", "v2.0")):
    """Prepares TFDS ``squad/<version>`` for each of ``versions`` in ``data_dir`` (array_record).

    Args:
        files: ``{file name: JSON text}`` with the official names (``train-v1.1.json``,
            ``dev-v1.1.json``, ``train-v2.0.json``, ``dev-v2.0.json``) of the versions prepared.
        files_dir: where the files are written; the patched download manager serves them.
        data_dir: the TFDS data_dir to prepare.

    Returns:
        ``str(data_dir)``.
    """
    for name, text in files.items():
        with open(os.path.join(files_dir, name), "w", encoding="utf-8") as f:
            f.write(text)

    def download_and_extract(self, urls):  # the builder asks for {"train": url, "dev": url}
        return {key: os.path.join(str(files_dir), os.path.basename(url))
                for key, url in urls.items()}

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tfds.download.DownloadManager, "download_and_extract",
                      download_and_extract)
        for version in versions:
            builder = tfds.builder(f"squad/{version}", data_dir=str(data_dir),
                                   file_format="array_record")
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    assert "tensorflow" not in sys.modules
    return str(data_dir)
