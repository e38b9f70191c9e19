"""Shared fixtures of the data tests: the prepared embedded corpus and small tokenizers."""

from __future__ import annotations

import time

import pytest

from lmjax.data.tokenizers import SentencePieceOptions, Tokenizer, trained_sentencepiece_tokenizer

# Special ids of WordTokenizer, the same layout as the trained SentencePiece models.
PAD, UNK, BOS, EOS = 0, 1, 2, 3


class WordTokenizer(Tokenizer):
    """A test tokenizer: each whitespace-separated word ``"<n>"`` is id ``n`` (n >= 4).

    Lets packing tests state their expected token streams literally.
    """

    def encode(self, text):
        return [int(word) for word in text.split()]

    def decode(self, ids):
        return " ".join(str(i) for i in ids)

    def id_of(self, piece):
        return {"<pad>": PAD, "<unk>": UNK, "<s>": BOS, "</s>": EOS}[piece]

    def id_to_piece(self, piece_id):
        return {PAD: "<pad>", UNK: "<unk>", BOS: "<s>", EOS: "</s>"}.get(piece_id, str(piece_id))

    @property
    def vocab_size(self):
        return 1000

    @property
    def pad_id(self):
        return PAD

    @property
    def bos_id(self):
        return BOS

    @property
    def eos_id(self):
        return EOS

    @property
    def unk_id(self):
        return UNK


@pytest.fixture
def word_tokenizer():
    return WordTokenizer()


@pytest.fixture(scope="session")
def python_docs_dir(tmp_path_factory):
    """A TFDS data_dir with the whole embedded corpus prepared (~3 s), and how long it took."""
    from lmjax.data.python_docs import prepared_python_docs_builder

    data_dir = str(tmp_path_factory.mktemp("tfds_data"))
    start = time.perf_counter()
    prepared_python_docs_builder(data_dir)
    seconds = time.perf_counter() - start
    print(f"\n[python_docs] prepared the full corpus in {seconds:.1f} s")
    return data_dir, seconds


@pytest.fixture(scope="session")
def python_docs_train_texts(python_docs_dir):
    from lmjax.data.sources import open_documents

    return open_documents({"source": "python_docs", "data_dir": python_docs_dir[0]}, "train")


SMALL_OPTIONS = SentencePieceOptions(
    vocab_size=600,
    user_defined_symbols=("_start_", "_delimiter_", "_classify_"),
    max_training_chars=300_000,
)


@pytest.fixture(scope="session")
def small_sentencepiece(python_docs_train_texts):
    """A 600-piece unigram model trained on ~300k characters of the embedded corpus (~1 s)."""
    return trained_sentencepiece_tokenizer(python_docs_train_texts, SMALL_OPTIONS)


@pytest.fixture
def small_options():
    return SMALL_OPTIONS


ENCODER_OPTIONS = SentencePieceOptions(
    vocab_size=600,
    user_defined_symbols=("[CLS]", "[SEP]", "[MASK]"),
    max_training_chars=300_000,
)


@pytest.fixture(scope="session")
def encoder_sentencepiece(python_docs_train_texts):
    """Like ``small_sentencepiece`` but with BERT's ``[CLS] [SEP] [MASK]`` pieces (~1 s)."""
    return trained_sentencepiece_tokenizer(python_docs_train_texts, ENCODER_OPTIONS)
