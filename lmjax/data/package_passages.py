"""A labelled task from the embedded corpus: which standard-library package a passage documents.

The Python-docs corpus (``lmjax.data.python_docs``) names every document by its source file, e.g.
``stdlib/email/parser.py``; the top directory (``email``) is a real label the text never states
outright (module docstrings rarely name their package). A passage is a window of a module's
tokens; the task is to tell which of the largest packages it comes from.

Passages are split **by module**, never within one: a module's passages are all in the probe's
training part or all in its held-out part (a stable hash of the module name decides), so a
held-out passage is never a neighbour of a training one. The classes are the ``num_classes``
packages with the most documented modules; chance is the held-out share of the largest class.

The task is a linear-probe benchmark for pre-trained encoders here; the fine-tuning work builds
its own offline tasks.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
from collections.abc import Sequence

import numpy as np

from lmjax.data.encoder_vocab import EncoderSpecialIds
from lmjax.data.tokenizers import Tokenizer

__all__ = ["PackagePassages", "package_of", "package_passages"]

STDLIB_PREFIX = "stdlib/"
# Left out: the generated codec modules of ``encodings`` share one boilerplate docstring, so
# their passages are near copies of each other and would make the task trivial.
EXCLUDED_PACKAGES = ("encodings",)


@dataclasses.dataclass(frozen=True)
class PackagePassages:
    """Encoder rows and labels of the package task.

    Attributes:
        packages: the class names, label i = ``packages[i]``.
        train / test: dicts of ``'inputs'`` int32 [N, L] (``[CLS] passage [SEP]`` then padding),
            ``'attention_mask'`` int32 [N, L], ``'token_type_ids'`` int32 [N, L] (zeros) and
            ``'labels'`` int32 [N].
    """

    packages: tuple[str, ...]
    train: dict[str, np.ndarray]
    test: dict[str, np.ndarray]


def package_of(source: str) -> str | None:
    """The top-level package of a corpus document name (``'stdlib/email/parser.py'`` ->
    ``'email'``), or None for single-file modules, the language reference and
    ``EXCLUDED_PACKAGES``."""
    if not source.startswith(STDLIB_PREFIX):
        return None
    parts = source[len(STDLIB_PREFIX):].split("/")
    if len(parts) == 1 or parts[0] in EXCLUDED_PACKAGES:
        return None
    return parts[0]


def _held_out(module: str, test_fraction: float) -> bool:
    digest = hashlib.sha256(module.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < test_fraction


def _rows(
    token_lists: Sequence[list[int]], seq_len: int, special: EncoderSpecialIds
) -> dict[str, np.ndarray]:
    inputs = np.full((len(token_lists), seq_len), special.pad_id, np.int32)
    mask = np.zeros((len(token_lists), seq_len), np.int32)
    for row, tokens in enumerate(token_lists):
        ids = [special.cls_id] + tokens + [special.sep_id]
        inputs[row, : len(ids)] = ids
        mask[row, : len(ids)] = 1
    return {"inputs": inputs, "attention_mask": mask, "token_type_ids": np.zeros_like(inputs)}


def package_passages(
    documents: Sequence[tuple[str, str]],
    tokenizer: Tokenizer,
    special: EncoderSpecialIds,
    *,
    seq_len: int = 128,
    num_classes: int = 8,
    passages_per_module: int = 8,
    test_fraction: float = 0.3,
) -> PackagePassages:
    """Builds the package task from ``(source name, text)`` documents of the corpus.

    Each module gives up to ``passages_per_module`` consecutive windows of ``seq_len - 2``
    tokens, skipping its first line (``Module <dotted name>``, which would give the label away).

    Raises:
        ValueError: when fewer than ``num_classes`` packages have modules on both sides of the
            split.
    """
    by_package: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
    for source, text in documents:
        package = package_of(source)
        if package is not None:
            by_package[package].append((source, text))
    usable = {
        p: modules for p, modules in by_package.items()
        if len({_held_out(m, test_fraction) for m, _ in modules}) == 2
    }
    if len(usable) < num_classes:
        raise ValueError(
            f"only {len(usable)} packages have modules on both sides of the split; ask for "
            f"num_classes <= {len(usable)}."
        )
    packages = tuple(sorted(usable, key=lambda p: (-len(usable[p]), p))[:num_classes])
    window = seq_len - 2
    parts: dict[bool, tuple[list[list[int]], list[int]]] = {False: ([], []), True: ([], [])}
    for label, package in enumerate(packages):
        for module, text in sorted(usable[package]):
            body = text.split("\n", 1)[1] if "\n" in text else ""
            tokens = tokenizer.encode(body)
            tokens_of, labels = parts[_held_out(module, test_fraction)]
            for start in range(0, min(len(tokens), window * passages_per_module), window):
                piece = tokens[start : start + window]
                if len(piece) >= window // 4:  # drop short tails
                    tokens_of.append(piece)
                    labels.append(label)
    split = {}
    for held_out, (token_lists, labels) in parts.items():
        rows = _rows(token_lists, seq_len, special)
        rows["labels"] = np.asarray(labels, np.int32)
        split[held_out] = rows
    return PackagePassages(packages=packages, train=split[False], test=split[True])
