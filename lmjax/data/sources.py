"""Document sources: a config's ``data.source`` opened as a random-access sequence of strings.

``open_documents(data_cfg, split)`` understands four kinds of source:

==========================  ================================================================
``python_docs``             the embedded corpus (``lmjax.data.python_docs``), prepared into
                            ``data.data_dir`` on first use
``tfds:<name>[/<config>]``  a TFDS dataset already prepared in ``data.data_dir`` in the
                            ``array_record`` format, read with ``tfds.data_source`` (no
                            TensorFlow); field ``data.text_key`` (lm1b, c4 and wikipedia all
                            use ``'text'``)
``text:<glob>``             UTF-8 text files: each file one document, or with
                            ``data.text_unit = 'paragraph'`` each blank-line-separated paragraph
``jsonl:<glob>``            JSON Lines files, one document per line, field ``data.text_key``
==========================  ================================================================

Nothing is downloaded at run time (DESIGN.md, "Data"). A TFDS dataset that is not prepared is an
error that names the dataset, the directory and the command that prepares it.

Splits of text and JSONL sources: when the glob contains ``{split}`` it is filled with the split
name (``text:/corpus/{split}/*.txt``); otherwise documents are split by a stable hash of their
name (``lmjax.data.splits``) into ``'train'`` and ``'validation'``.

Documents come back as a ``Sequence[str]`` (``len`` and ``[i]``): a TFDS source is read lazily
record by record, so a corpus the size of C4 is never loaded whole; text and JSONL files are read
into memory when opened (use TFDS for corpora that do not fit).
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import re
from collections.abc import Iterator, Sequence
from typing import Any, overload

from lmjax.data.splits import DEFAULT_VALIDATION_FRACTION, TRAIN, VALIDATION, split_of_document

__all__ = [
    "DecodedTextField",
    "config_value",
    "jsonl_documents",
    "open_documents",
    "resolved_data_dir",
    "text_file_documents",
    "tfds_documents",
]

_SOURCE_KINDS = ("python_docs", "tfds:<name>[/<config>]", "text:<glob>", "jsonl:<glob>")
_PARAGRAPH_BREAK = re.compile(r"\n(?:[ \t]*\n)+")


def config_value(cfg: Any, key: str, default: Any = None) -> Any:
    """Returns ``cfg[key]`` of a ConfigDict, dict or attribute object, or ``default`` if unset."""
    if hasattr(cfg, "get"):
        return cfg.get(key, default)
    return getattr(cfg, key, default)


def resolved_data_dir(data_dir: str | None) -> str:
    """Returns ``data_dir`` with ``~`` expanded, or the default (``$LMJAX_DATA_DIR`` or
    ``~/.cache/lmjax/tensorflow_datasets``) when it is empty."""
    from lmjax.data.python_docs import default_data_dir

    return os.path.expanduser(data_dir) if data_dir else default_data_dir()


class DecodedTextField(Sequence[str]):
    """Random-access view of one text field of records, decoded to ``str``.

    TFDS data sources return ``Text`` features as UTF-8 bytes; this view decodes them on access,
    so wrapping a huge source costs nothing up front.
    """

    def __init__(self, records: Sequence[Any], key: str, description: str):
        self._records = records
        self._key = key
        self._description = description

    def __len__(self) -> int:
        return len(self._records)

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        index = int(index)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):  # array_record raises ValueError, which breaks iteration
            raise IndexError(f"Document {index} of {self._description}, which has {len(self)}.")
        record = self._records[index]
        if self._key not in record:
            raise KeyError(
                f"Records of {self._description} have no field {self._key!r}; their fields are "
                f"{sorted(record)}. Set data.text_key to the field that holds the text."
            )
        value = record[self._key]
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)

    def __iter__(self) -> Iterator[str]:
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        return f"DecodedTextField({self._description}, key={self._key!r}, len={len(self)})"


# --- TFDS -----------------------------------------------------------------------------------


LM_ALTERNATIVE = "train on the embedded corpus instead: data.source='python_docs'"


def _unprepared_tfds_message(name: str, split: str, data_dir: str, reason: str,
                             setting: str, alternative: str) -> str:
    dataset = name.split(":", 1)[0]
    return (
        f"The TFDS dataset {name!r} (split {split!r}) is not usable from data_dir {data_dir!r}: "
        f"{reason} lmjax never downloads data at run time. To fix it, either\n"
        f"  * prepare it on a machine with network access:\n"
        f"      tfds build {dataset} --data_dir={data_dir} --file_format=array_record\n"
        f"    (array_record is required: reading without TensorFlow needs random access), then "
        f"copy {os.path.join(data_dir, dataset.split('/')[0])} to this machine and set "
        f"{setting} to its parent; or\n"
        f"  * {alternative}."
    )


def diagnosed_tfds_failure(
    name: str, split: str, data_dir: str, error: Exception, *,
    setting: str = "data.data_dir", alternative: str = LM_ALTERNATIVE,
) -> Exception:
    """Returns the error to raise after ``tfds.data_source`` failed on ``name``: for a dataset
    that is missing or not prepared as array_record, a ``FileNotFoundError`` naming the
    ``tfds build`` command, the config ``setting`` to point at it and an offline
    ``alternative``; else ``error`` itself."""
    dataset_dir = os.path.join(data_dir, *name.split(":", 1)[0].split("/"))
    info_files = glob.glob(os.path.join(dataset_dir, "**", "dataset_info.json"), recursive=True)
    if not os.path.isdir(data_dir):
        reason = "that directory does not exist."
    elif not info_files:
        reason = f"{dataset_dir} holds no prepared version (no dataset_info.json)."
    elif not glob.glob(os.path.join(dataset_dir, "**", "*.array_record*"), recursive=True):
        reason = (
            f"it is prepared in {dataset_dir} but not in the array_record format (TFRecord files "
            "need TensorFlow to read; convert them with `tfds convert_format --dataset_dir "
            f"{dataset_dir} --out_file_format=array_record` where TensorFlow is installed)."
        )
    else:
        return error  # prepared and readable in principle: the original error says more
    return FileNotFoundError(
        _unprepared_tfds_message(name, split, data_dir, reason, setting, alternative))


class _RecordHolder(logging.Handler):
    """A logging handler that keeps the records it is given in ``records``."""

    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def held_log_records(logger_name: str) -> Iterator[list[logging.LogRecord]]:
    """Holds back what ``logger_name`` logs inside the block and passes it on when the block ends.

    Yields the list of held records: the block drops them by clearing it. TFDS logs warnings
    about the folders it probes (through absl's logger) before it fails on a dataset that is not
    prepared; the error raised then explains more, and printing both would bury it.
    """
    logger = logging.getLogger(logger_name)
    holder = _RecordHolder()
    propagate = logger.propagate
    logger.addHandler(holder)
    logger.propagate = False
    try:
        yield holder.records
    finally:
        logger.removeHandler(holder)
        logger.propagate = propagate
        for record in holder.records:
            logging.getLogger(record.name).handle(record)


def tfds_documents(name: str, split: str, data_dir: str, text_key: str) -> DecodedTextField:
    """Returns the ``text_key`` field of a prepared TFDS dataset's split, lazily decoded.

    Args:
        name: ``'lm1b'``, ``'c4/en'``, ``'wikipedia/20230601.en'``, optionally with a version
            (``'c4/en:3.1.0'``).
        split: A TFDS split or slice (``'train'``, ``'validation[:5%]'``).
        data_dir: The directory the dataset was prepared into.
        text_key: The feature holding the document text.

    Raises:
        FileNotFoundError: The dataset is not prepared (in ``array_record``) in ``data_dir``; the
            message names the dataset and directory and gives the ``tfds build`` command.
        ValueError: The split is empty.
    """
    import tensorflow_datasets as tfds

    with held_log_records("absl") as tfds_warnings:
        try:
            records = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
        except Exception as error:  # tfds raises several unrelated types for "not prepared"
            diagnosed = diagnosed_tfds_failure(name, split, data_dir, error)
            if diagnosed is error:
                raise
            tfds_warnings.clear()  # the diagnosis says more than the folders TFDS probed
            raise diagnosed from error
    description = f"TFDS {name!r} split {split!r} in {data_dir!r}"
    if len(records) == 0:
        raise ValueError(f"{description} has no records; choose a non-empty split.")
    return DecodedTextField(records, text_key, description)


# --- Text and JSON Lines files ----------------------------------------------------------------


def _matching_files(pattern: str, source: str) -> tuple[list[str], str]:
    """Returns the sorted files matching ``pattern`` and the directory names are relative to."""
    paths = sorted(p for p in glob.glob(os.path.expanduser(pattern), recursive=True)
                   if os.path.isfile(p))
    if not paths:
        raise FileNotFoundError(
            f"data.source={source!r}: no file matches {pattern!r} (relative patterns are resolved "
            f"from the working directory {os.getcwd()!r}). Check the path, or use "
            "data.source='python_docs' for the embedded corpus."
        )
    root = os.path.expanduser(pattern)
    while glob.has_magic(root):
        root = os.path.dirname(root)
    return paths, (root if os.path.isdir(root) else os.path.dirname(root)) or "."


def _read_utf8(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path} is not UTF-8 text ({error}); convert it (e.g. `iconv -t utf-8`) or leave it "
            "out of the glob."
        ) from None


def _expanded_pattern(pattern: str, split: str) -> tuple[str, bool]:
    """Fills ``{split}`` in ``pattern``; returns (pattern, whether the split was explicit)."""
    if "{split}" in pattern:
        return pattern.replace("{split}", split), True
    if split not in (TRAIN, VALIDATION):
        raise ValueError(
            f"Split {split!r} of a text/JSONL source without '{{split}}' in its glob: such "
            f"sources are split by name hash into {TRAIN!r} and {VALIDATION!r} only. Use one of "
            "those, or put '{split}' in the glob to name split files yourself."
        )
    return pattern, False


def _kept_documents(named: list[tuple[str, str]], split: str, explicit_split: bool,
                    validation_fraction: float, source: str) -> list[str]:
    if explicit_split:
        return [text for _, text in named]
    kept = [text for name, text in named if split_of_document(name, validation_fraction) == split]
    if not kept:
        raise ValueError(
            f"data.source={source!r} has {len(named)} documents but the name-hash split puts none "
            f"in {split!r} (validation_fraction={validation_fraction}). Add documents, use "
            "data.text_unit='paragraph' for a single large file, or put '{split}' in the glob."
        )
    return kept


def text_file_documents(
    pattern: str,
    split: str,
    unit: str = "file",
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
) -> list[str]:
    """Returns the documents of UTF-8 text files matching ``pattern`` in ``split``.

    Args:
        pattern: A glob (``**`` recurses); ``{split}`` in it is replaced by ``split``.
        split: ``'train'``/``'validation'`` (hash split), or any name filling ``{split}``.
        unit: ``'file'`` (each file one document) or ``'paragraph'`` (each run of text between
            blank lines; names ``<file>#<index>`` decide the hash split).
        validation_fraction: Share of documents held out by the hash split.

    Raises:
        FileNotFoundError: No file matches.
        ValueError: A matching file is empty or not UTF-8, ``unit`` is unknown, or the split ends
            up empty.
    """
    if unit not in ("file", "paragraph"):
        raise ValueError(f"data.text_unit={unit!r}: use 'file' or 'paragraph'.")
    source = f"text:{pattern}"
    pattern, explicit_split = _expanded_pattern(pattern, split)
    paths, root = _matching_files(pattern, source)
    named = []
    for path in paths:
        text = _read_utf8(path)
        if not text.strip():
            raise ValueError(
                f"{path} (matched by data.source={source!r}) is empty. Remove it or narrow the "
                "glob: an empty document would train on nothing but an end-of-text token."
            )
        name = os.path.relpath(path, root)
        if unit == "file":
            named.append((name, text))
        else:
            paragraphs = [p.strip("\n") for p in _PARAGRAPH_BREAK.split(text) if p.strip()]
            named.extend((f"{name}#{i}", p) for i, p in enumerate(paragraphs))
    return _kept_documents(named, split, explicit_split, validation_fraction, source)


def jsonl_documents(
    pattern: str,
    split: str,
    text_key: str = "text",
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
) -> list[str]:
    """Returns field ``text_key`` of every line of the JSON Lines files matching ``pattern``.

    Blank lines are skipped. Lines are named ``<file>:<line number>`` for the hash split.

    Raises:
        FileNotFoundError: No file matches.
        ValueError: A file has no records, a line is not a JSON object, lacks ``text_key`` or its
            value is not a string (the message names file and line), or the split ends up empty.
    """
    source = f"jsonl:{pattern}"
    pattern, explicit_split = _expanded_pattern(pattern, split)
    paths, root = _matching_files(pattern, source)
    named = []
    for path in paths:
        name = os.path.relpath(path, root)
        records_in_file = 0
        for line_number, line in enumerate(_read_utf8(path).splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{line_number} is not valid JSON ({error}).") from None
            if not isinstance(record, dict) or text_key not in record:
                fields = sorted(record) if isinstance(record, dict) else type(record).__name__
                raise ValueError(
                    f"{path}:{line_number} has no field {text_key!r} (it has {fields}). Set "
                    "data.text_key to the field that holds the text."
                )
            if not isinstance(record[text_key], str):
                raise ValueError(
                    f"{path}:{line_number}: field {text_key!r} is a "
                    f"{type(record[text_key]).__name__}, not a string."
                )
            records_in_file += 1
            named.append((f"{name}:{line_number}", record[text_key]))
        if records_in_file == 0:
            raise ValueError(
                f"{path} (matched by data.source={source!r}) has no records. Remove it or narrow "
                "the glob."
            )
    return _kept_documents(named, split, explicit_split, validation_fraction, source)


# --- Entry point ---------------------------------------------------------------------------


def open_documents(data_cfg: Any, split: str) -> Sequence[str]:
    """Returns the documents of ``data_cfg.source`` in ``split`` as a random-access sequence.

    Args:
        data_cfg: The experiment's ``data`` config (ConfigDict or dict). Keys read: ``source``,
            ``data_dir`` (TFDS sources; empty = ``$LMJAX_DATA_DIR`` or
            ``~/.cache/lmjax/tensorflow_datasets``), ``text_key`` (TFDS and JSONL; default
            ``'text'``), optional ``text_unit`` (``'file'``/``'paragraph'``, text sources),
            ``validation_fraction`` (hash-split text/JSONL sources) and ``max_documents``
            (``python_docs`` only: a prefix of the corpus, for quick tests).
        split: The split name, e.g. ``data_cfg.train_split`` or ``data_cfg.eval_split``.

    Returns:
        ``Sequence[str]``; TFDS-backed sources decode each document when it is accessed.

    Raises:
        ValueError: An unknown source kind, an empty file or split, a bad JSONL record.
        FileNotFoundError: A glob without matches, or a TFDS dataset that is not prepared.
    """
    source = config_value(data_cfg, "source", "")
    if not isinstance(source, str) or not source:
        raise ValueError(f"data.source is {source!r}; set it to one of {_SOURCE_KINDS}.")
    text_key = config_value(data_cfg, "text_key", "text") or "text"
    fraction = config_value(data_cfg, "validation_fraction", DEFAULT_VALIDATION_FRACTION)
    if source == "python_docs":
        from lmjax.data.python_docs import python_docs_records

        data_dir = resolved_data_dir(config_value(data_cfg, "data_dir", ""))
        max_documents = config_value(data_cfg, "max_documents", None)
        records = python_docs_records(split, data_dir, max_documents)
        return DecodedTextField(records, "text", f"python_docs split {split!r} in {data_dir!r}")
    kind, _, argument = source.partition(":")
    if not argument:
        raise ValueError(
            f"data.source={source!r} is not a known source; use one of {_SOURCE_KINDS}."
        )
    if kind == "tfds":
        data_dir = resolved_data_dir(config_value(data_cfg, "data_dir", ""))
        return tfds_documents(argument, split, data_dir, text_key)
    if kind == "text":
        unit = config_value(data_cfg, "text_unit", "file") or "file"
        return text_file_documents(argument, split, unit, fraction)
    if kind == "jsonl":
        return jsonl_documents(argument, split, text_key, fraction)
    raise ValueError(
        f"data.source={source!r} has unknown kind {kind!r}; use one of {_SOURCE_KINDS}."
    )
