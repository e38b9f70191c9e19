"""Tokenizers: one small interface over SentencePiece models and Hugging Face ``tokenizer.json``.

* :class:`SentencePieceTokenizer` wraps a SentencePiece model (Kudo & Richardson, 2018,
  arXiv:1808.06226): loaded from a ``.model`` file, or trained here from an iterable of texts with
  :func:`trained_sentencepiece_tokenizer` (unigram LM, Kudo 2018, arXiv:1804.10959, or BPE,
  Sennrich et al. 2016).
* :class:`HuggingFaceTokenizer` wraps a ``tokenizer.json`` through the ``tokenizers`` library
  (e.g. GPT-2's byte-level BPE, for converted checkpoints).
* ``WordPieceTokenizer`` (in ``lmjax.data.encoder_vocab``, with what encoders need of a
  vocabulary: special ids and word starts) reads a published BERT ``vocab.txt``;
  ``loaded_tokenizer`` opens it as ``kind='wordpiece'``.

Training choices, and why:

* ``byte_fallback=True`` by default: characters outside the learned vocabulary become UTF-8 byte
  pieces ``<0xEC>`` instead of ``<unk>``, so any text (Korean, emoji) round-trips exactly even when
  the training corpus has none of it.
* Identity normalisation, no whitespace collapsing, no dummy prefix: ``decode(encode(s)) == s``
  for every string, indentation and newlines included (code in docstrings keeps its layout). The
  trainer sees one line per sentence, and a document's later lines start without a space, so no
  dummy prefix keeps training and encoding consistent.
* Fixed special ids: ``<pad>`` 0, ``<unk>`` 1, ``<s>`` 2, ``</s>`` 3; ``user_defined_symbols``
  (GPT-1's ``_start_``, ``_delimiter_``, ``_classify_``; Radford et al. 2018, section 3.3) follow
  and always encode to one id each.
* Deterministic: one training thread, a fixed random seed, no input sampling by SentencePiece (the
  training texts are chosen here, in a seeded order), so one corpus gives a byte-identical model.

:func:`load_or_train_tokenizer` is what the train loop calls: it loads ``tokenizer.path`` or trains
once into ``<workdir>/tokenizer/`` and reuses that file afterwards, under a file lock so that
several processes on one machine train it once.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import functools
import io
import json
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import sentencepiece as spm

from lmjax.data.file_lock import held_file_lock
from lmjax.data.shuffle import EpochPermutation
from lmjax.data.sources import config_value

__all__ = [
    "HuggingFaceTokenizer",
    "SentencePieceOptions",
    "SentencePieceTokenizer",
    "Tokenizer",
    "load_or_train_tokenizer",
    "loaded_tokenizer",
    "sentencepiece_options",
    "trained_sentencepiece_tokenizer",
]

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
_MAX_LINE_BYTES = 1 << 16  # longer lines are left out of training (SentencePiece would skip them)
_CACHED_MODEL = "sentencepiece.model"
_CACHED_OPTIONS = "sentencepiece_options.json"


class Tokenizer(abc.ABC):
    """What lmjax needs of a tokenizer: text <-> ids and the special ids.

    ``bos_id`` / ``eos_id`` / ``unk_id`` are None when the vocabulary has no such piece.
    ``pad_id`` is always a valid id to put in padding positions (the model's pad piece, else its
    end-of-text piece, else 0); padding is also marked by ``segment_ids == 0`` and zero weight.
    """

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]:
        """Returns the ids of ``text``, without adding BOS/EOS."""

    @abc.abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """Returns the text of ``ids`` (special pieces are rendered, not dropped)."""

    @abc.abstractmethod
    def id_of(self, piece: str) -> int:
        """Returns the id of vocabulary piece ``piece``; KeyError if it is not one."""

    @abc.abstractmethod
    def id_to_piece(self, piece_id: int) -> str:
        """Returns the vocabulary piece of ``piece_id`` as stored (``'▁the'``, ``'##ing'``)."""

    def is_special(self, piece_id: int) -> bool:
        """True for pieces that are not text: control, unknown, byte, added/user-defined pieces."""
        return False

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """Number of ids (every id is < vocab_size)."""

    @property
    @abc.abstractmethod
    def pad_id(self) -> int: ...

    @property
    @abc.abstractmethod
    def bos_id(self) -> int | None: ...

    @property
    @abc.abstractmethod
    def eos_id(self) -> int | None: ...

    @property
    @abc.abstractmethod
    def unk_id(self) -> int | None: ...


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece model (``.model`` protobuf) behind the :class:`Tokenizer` interface."""

    def __init__(self, model_proto: bytes, description: str = "sentencepiece model"):
        self.model_proto = bytes(model_proto)
        self._processor = spm.SentencePieceProcessor(model_proto=self.model_proto)
        self._description = description

    @classmethod
    def from_file(cls, path: str) -> SentencePieceTokenizer:
        """Loads a SentencePiece ``.model`` file."""
        with open(path, "rb") as f:
            proto = f.read()
        try:
            return cls(proto, description=path)
        except RuntimeError as error:
            raise ValueError(
                f"{path} is not a SentencePiece model ({error}). Point tokenizer.path at a "
                "'.model' file, or use tokenizer.kind='hf_json' for a tokenizer.json."
            ) from None

    def encode(self, text: str) -> list[int]:
        return self._processor.encode(text, out_type=int)

    def decode(self, ids: Iterable[int]) -> str:
        return self._processor.decode([int(i) for i in ids])

    def id_of(self, piece: str) -> int:
        piece_id = self._processor.piece_to_id(piece)
        if piece_id == self._processor.unk_id() and piece != self._processor.id_to_piece(piece_id):
            raise KeyError(
                f"{piece!r} is not a piece of {self._description}. Special tokens must be in "
                "tokenizer.user_defined_symbols when the tokenizer is trained."
            )
        return piece_id

    def id_to_piece(self, piece_id: int) -> str:
        return self._processor.id_to_piece(int(piece_id))

    def is_special(self, piece_id: int) -> bool:
        piece_id = int(piece_id)
        processor = self._processor
        return (processor.is_control(piece_id) or processor.is_unknown(piece_id)
                or processor.is_byte(piece_id) or piece_id in self._user_defined_ids)

    @functools.cached_property
    def _user_defined_ids(self) -> frozenset[int]:
        from sentencepiece import sentencepiece_model_pb2

        proto = sentencepiece_model_pb2.ModelProto()
        proto.ParseFromString(self.model_proto)
        user_defined = sentencepiece_model_pb2.ModelProto.SentencePiece.USER_DEFINED
        return frozenset(i for i, p in enumerate(proto.pieces) if p.type == user_defined)

    @property
    def vocab_size(self) -> int:
        return self._processor.get_piece_size()

    @property
    def pad_id(self) -> int:
        for candidate in (self._processor.pad_id(), self._processor.eos_id()):
            if candidate >= 0:
                return candidate
        return 0

    @property
    def bos_id(self) -> int | None:
        return self._processor.bos_id() if self._processor.bos_id() >= 0 else None

    @property
    def eos_id(self) -> int | None:
        return self._processor.eos_id() if self._processor.eos_id() >= 0 else None

    @property
    def unk_id(self) -> int | None:
        return self._processor.unk_id() if self._processor.unk_id() >= 0 else None

    def __repr__(self) -> str:
        return f"SentencePieceTokenizer({self._description}, vocab_size={self.vocab_size})"


# Spellings of the special pieces in common tokenizer.json files, most specific first.
_HF_SPECIAL_CANDIDATES = {
    "eos": ("</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>"),
    "bos": ("<s>", "<|startoftext|>", "<|begin_of_text|>", "<bos>"),
    "pad": ("<pad>", "[PAD]", "<|pad|>"),
    "unk": ("<unk>", "[UNK]", "<|unk|>"),
}


class HuggingFaceTokenizer(Tokenizer):
    """A Hugging Face ``tokenizer.json`` (``tokenizers`` library) behind :class:`Tokenizer`.

    Special pieces are found by their usual spellings (``</s>``/``<|endoftext|>`` for EOS, ...)
    unless named explicitly. GPT-2's file has only ``<|endoftext|>``, which becomes ``eos_id``
    (and ``pad_id``); ``bos_id`` is then None.

    Args:
        path: The ``tokenizer.json`` file.
        eos_token, bos_token, pad_token, unk_token: Explicit spellings of the special pieces.
    """

    def __init__(self, path: str, eos_token: str | None = None, bos_token: str | None = None,
                 pad_token: str | None = None, unk_token: str | None = None):
        from tokenizers import Tokenizer as HFTokenizer

        try:
            self._tokenizer = HFTokenizer.from_file(path)
        except Exception as error:  # tokenizers raises a bare Exception on a malformed file
            raise ValueError(
                f"{path} is not a Hugging Face tokenizer.json ({error}). Point tokenizer.path at "
                "a tokenizer.json, or use tokenizer.kind='sentencepiece' for a '.model' file."
            ) from None
        self._path = path
        explicit = {"eos": eos_token, "bos": bos_token, "pad": pad_token, "unk": unk_token}
        self._special: dict[str, int | None] = {}
        for role, candidates in _HF_SPECIAL_CANDIDATES.items():
            if explicit[role] is not None:
                self._special[role] = self.id_of(explicit[role])
            else:
                found = (self._tokenizer.token_to_id(c) for c in candidates)
                self._special[role] = next((i for i in found if i is not None), None)

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int]) -> str:
        return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

    def id_of(self, piece: str) -> int:
        piece_id = self._tokenizer.token_to_id(piece)
        if piece_id is None:
            raise KeyError(f"{piece!r} is not a token of {self._path}.")
        return piece_id

    def id_to_piece(self, piece_id: int) -> str:
        piece = self._tokenizer.id_to_token(int(piece_id))
        if piece is None:
            raise KeyError(f"Id {piece_id} is outside the vocabulary of {self._path}.")
        return piece

    def is_special(self, piece_id: int) -> bool:
        return int(piece_id) in self._added_ids

    @functools.cached_property
    def _added_ids(self) -> frozenset[int]:
        return frozenset(int(i) for i in self._tokenizer.get_added_tokens_decoder())

    @functools.cached_property
    def continuing_subword_prefix(self) -> str | None:
        """``'##'`` when the model is WordPiece (pieces inside a word carry it), else None."""
        model = json.loads(self._tokenizer.to_str()).get("model", {})
        if model.get("type") == "WordPiece":
            return model.get("continuing_subword_prefix") or "##"
        return None

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def pad_id(self) -> int:
        for role in ("pad", "eos"):
            if self._special[role] is not None:
                return self._special[role]
        return 0

    @property
    def bos_id(self) -> int | None:
        return self._special["bos"]

    @property
    def eos_id(self) -> int | None:
        return self._special["eos"]

    @property
    def unk_id(self) -> int | None:
        return self._special["unk"]

    def __repr__(self) -> str:
        return f"HuggingFaceTokenizer({self._path}, vocab_size={self.vocab_size})"


# --- Training -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SentencePieceOptions:
    """How a SentencePiece model is trained (the config's ``tokenizer`` fields plus a few extras).

    Attributes:
        vocab_size: Pieces in the model, specials and byte pieces included.
        model_type: ``'unigram'`` or ``'bpe'``.
        byte_fallback: Encode characters outside the vocabulary as UTF-8 byte pieces.
        character_coverage: Share of training characters the vocabulary must cover as characters.
        user_defined_symbols: Pieces that always encode to one id (GPT-1's ``'_start_'``, ...).
        seed: Seeds SentencePiece's generator and the order training texts are drawn in.
        num_threads: Training threads; 1 makes the model byte-identical across runs.
        max_training_chars: Stop feeding texts to the trainer after this many characters.
    """

    vocab_size: int = 8192
    model_type: str = "unigram"
    byte_fallback: bool = True
    character_coverage: float = 0.9995
    user_defined_symbols: tuple[str, ...] = ()
    seed: int = 0
    num_threads: int = 1
    max_training_chars: int = 20_000_000

    def __post_init__(self):
        if self.model_type not in ("unigram", "bpe"):
            raise ValueError(
                f"tokenizer.model_type={self.model_type!r}: use 'unigram' or 'bpe'."
            )
        specials = 4 + len(self.user_defined_symbols) + (256 if self.byte_fallback else 0)
        if self.vocab_size <= specials:
            raise ValueError(
                f"tokenizer.vocab_size={self.vocab_size} leaves no room for learned pieces: "
                f"{specials} ids go to special, user-defined and byte pieces. Use a larger size."
            )
        if not 0.0 < self.character_coverage <= 1.0:
            raise ValueError(
                f"tokenizer.character_coverage={self.character_coverage} must be in (0, 1]."
            )
        for symbol in self.user_defined_symbols:
            if not symbol or "," in symbol or any(c.isspace() for c in symbol):
                raise ValueError(
                    f"tokenizer.user_defined_symbols has {symbol!r}; symbols must be non-empty "
                    "and contain no comma or whitespace."
                )


def sentencepiece_options(tok_cfg: Any) -> SentencePieceOptions:
    """Returns the training options a ``tokenizer`` config (ConfigDict or dict) asks for."""
    defaults = SentencePieceOptions()
    values = {}
    for field in dataclasses.fields(SentencePieceOptions):
        value = config_value(tok_cfg, field.name, getattr(defaults, field.name))
        values[field.name] = tuple(value) if field.name == "user_defined_symbols" else value
    return SentencePieceOptions(**values)


def _training_lines(texts: Iterable[str], options: SentencePieceOptions) -> Iterator[str]:
    """Yields the non-blank lines of ``texts`` until ``max_training_chars`` are given.

    A random-access ``Sequence`` is read in a seeded shuffled order, so that a budget smaller than
    the corpus samples all of it rather than its first (possibly sorted) documents.
    """
    if isinstance(texts, Sequence) and not isinstance(texts, str):
        order = EpochPermutation(len(texts), seed=options.seed, epoch=0)
        ordered = (texts[order[i]] for i in range(len(order)))
    else:
        ordered = iter(texts)
    given = 0
    for text in ordered:
        for line in text.split("\n"):
            if line.strip() and len(line.encode("utf-8")) <= _MAX_LINE_BYTES:
                yield line
                given += len(line)
                if given >= options.max_training_chars:
                    return


@contextlib.contextmanager
def _stderr_on_descriptor_2() -> Iterator[None]:
    """Makes ``sys.stderr`` a file on descriptor 2 while SentencePiece trains.

    SentencePiece's C++ trainer logs to descriptor 2 and moves that log to ``logstream`` by
    redirecting ``sys.stderr.fileno()``. In a Jupyter kernel ``sys.stderr`` has no descriptor (the
    redirect fails with ``io.UnsupportedOperation``) or a copy of the original one (the redirect
    misses, and hundreds of log lines land in the notebook); pytest's ``capsys`` is the first case.
    """
    try:
        on_descriptor_2 = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        on_descriptor_2 = False
    try:
        descriptor_2 = None if on_descriptor_2 else open(2, "w", closefd=False)
    except OSError:  # descriptor 2 is closed: nothing to redirect
        descriptor_2 = None
    if descriptor_2 is None:
        yield
        return
    captured, sys.stderr = sys.stderr, descriptor_2
    try:
        yield
    finally:
        sys.stderr = captured
        descriptor_2.close()  # closefd=False: descriptor 2 stays open


def trained_sentencepiece_tokenizer(
    texts: Iterable[str], options: SentencePieceOptions = SentencePieceOptions()
) -> SentencePieceTokenizer:
    """Trains a SentencePiece model on ``texts`` and returns it (see the module docstring).

    Raises:
        ValueError: The texts are empty, or too small for ``options.vocab_size`` (the message
            carries SentencePiece's own explanation).
    """
    lines = list(_training_lines(texts, options))
    if not lines:
        raise ValueError("No training text for the tokenizer: the documents are empty.")
    model = io.BytesIO()
    spm.set_random_generator_seed(options.seed)
    with tempfile.TemporaryFile("w+") as log, _stderr_on_descriptor_2():
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(lines),
                model_writer=model,
                logstream=log,
                vocab_size=options.vocab_size,
                model_type=options.model_type,
                character_coverage=options.character_coverage,
                byte_fallback=options.byte_fallback,
                user_defined_symbols=list(options.user_defined_symbols),
                pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
                pad_piece="<pad>", unk_piece="<unk>", bos_piece="<s>", eos_piece="</s>",
                normalization_rule_name="identity",
                remove_extra_whitespaces=False,
                add_dummy_prefix=False,
                allow_whitespace_only_pieces=True,
                split_digits=True,
                max_sentence_length=_MAX_LINE_BYTES,
                input_sentence_size=0,
                shuffle_input_sentence=False,
                num_threads=options.num_threads,
            )
        except RuntimeError as error:
            log.seek(0)
            tail = "".join(log.readlines()[-5:])
            raise ValueError(
                f"SentencePiece training failed: {error}\n{tail}If the vocabulary is too large for "
                f"the corpus ({sum(map(len, lines))} characters), lower tokenizer.vocab_size."
            ) from None
    return SentencePieceTokenizer(model.getvalue(), description="trained sentencepiece model")


# --- Loading and caching ----------------------------------------------------------------------


def loaded_tokenizer(kind: str, path: str, do_lower_case: bool = True) -> Tokenizer:
    """Returns the tokenizer stored at ``path``: ``kind`` 'sentencepiece', 'hf_json' or
    'wordpiece' (a BERT ``vocab.txt``; ``do_lower_case`` for uncased vocabularies)."""
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"tokenizer.path={path!r} does not exist. Point it at a SentencePiece '.model', a "
            "tokenizer.json or a BERT vocab.txt, or set tokenizer.path='' to train one from the "
            "corpus."
        )
    if kind == "sentencepiece":
        return SentencePieceTokenizer.from_file(path)
    if kind == "hf_json":
        return HuggingFaceTokenizer(path)
    if kind == "wordpiece":
        from lmjax.data.encoder_vocab import WordPieceTokenizer  # it builds on this module

        return WordPieceTokenizer(path, do_lower_case=do_lower_case)
    raise ValueError(f"tokenizer.kind={kind!r}: use 'sentencepiece', 'hf_json' or 'wordpiece'.")


def _written_atomically(path: str, data: bytes) -> None:
    """Writes ``data`` to a temporary file beside ``path`` and renames it into place."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def load_or_train_tokenizer(tok_cfg: Any, texts: Iterable[str], workdir: str) -> Tokenizer:
    """Returns the experiment's tokenizer: loaded from ``tok_cfg.path``, or trained once and cached.

    With ``tok_cfg.path`` set, the file is loaded (``tok_cfg.kind`` 'sentencepiece', 'hf_json' or
    'wordpiece' with optional ``tok_cfg.do_lower_case``, default True) and ``texts`` is not read.
    With ``path == ''`` a SentencePiece model is trained on ``texts``
    into ``<workdir>/tokenizer/sentencepiece.model`` with its options beside it; later calls (a
    resumed run, other processes) load that file and do not read ``texts``. Processes sharing the
    workdir on one machine take a file lock: the first trains, the others wait and load.

    Args:
        tok_cfg: The ``tokenizer`` config: kind, path, vocab_size, model_type, byte_fallback,
            character_coverage, user_defined_symbols (optional: seed, num_threads,
            max_training_chars).
        texts: Training documents, e.g. ``open_documents(config.data, config.data.train_split)``.
        workdir: The run's directory.

    Raises:
        ValueError: The cached model was trained with different options (the message lists them);
            delete ``<workdir>/tokenizer`` or use a new workdir to retrain.
    """
    kind = config_value(tok_cfg, "kind", "sentencepiece")
    path = config_value(tok_cfg, "path", "")
    if path:
        return loaded_tokenizer(kind, path, config_value(tok_cfg, "do_lower_case", True))
    if kind != "sentencepiece":
        raise ValueError(
            f"tokenizer.kind={kind!r} with an empty tokenizer.path: only 'sentencepiece' models "
            "are trained here. Set tokenizer.path to the tokenizer file."
        )
    options = sentencepiece_options(tok_cfg)
    wanted = dataclasses.asdict(options)
    wanted["user_defined_symbols"] = list(options.user_defined_symbols)
    directory = os.path.join(os.path.expanduser(workdir), "tokenizer")
    model_path = os.path.join(directory, _CACHED_MODEL)
    options_path = os.path.join(directory, _CACHED_OPTIONS)
    with held_file_lock(os.path.join(directory, ".lock")):
        if not os.path.exists(model_path):
            tokenizer = trained_sentencepiece_tokenizer(texts, options)
            _written_atomically(options_path, json.dumps(wanted, indent=2).encode())
            _written_atomically(model_path, tokenizer.model_proto)  # last: marks the cache done
    cached = {}
    if os.path.exists(options_path):
        with open(options_path) as f:
            cached = json.load(f)
    differences = {k: (cached.get(k), v) for k, v in wanted.items() if cached.get(k) != v}
    if differences:
        listed = ", ".join(
            f"{k}: cached {c!r} vs config {w!r}" for k, (c, w) in differences.items()
        )
        raise ValueError(
            f"The tokenizer cached in {directory} was trained with other options ({listed}). "
            f"Delete {directory} to retrain it, or use a new workdir."
        )
    return SentencePieceTokenizer.from_file(model_path)
