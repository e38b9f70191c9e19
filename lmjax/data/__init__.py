"""Data: the embedded corpus, document sources, tokenizers, packing and resumable LM batches.

What a train loop calls (see ``lmjax.data.batches`` for the full recipe)::

    from lmjax import data
    documents = data.open_documents(config.data, config.data.train_split)
    tokenizer = data.load_or_train_tokenizer(config.tokenizer, documents, workdir)
    train = data.train_batches(config.data, tokenizer, config.train.global_batch)
    evals = data.eval_batches(config.data, tokenizer, config.train.global_batch,
                              config.train.eval_batches)

Encoders (BERT, ALBERT, RoBERTa, ...) set ``data.format = 'segments'``: the same two calls then
give ``[CLS] A [SEP] B [SEP]`` batches (``lmjax.data.segment_batches``, pairs from
``lmjax.data.sentence_pairs``), and ``encoder_special_ids(tokenizer)`` /
``word_start_table(tokenizer)`` give the ids and word starts the objectives need.

Nothing here touches the network: TFDS datasets must be prepared in ``data.data_dir`` beforehand,
and the default source, ``python_docs``, is prepared from the running Python's own documentation.
Importing this package does not import TensorFlow Datasets; the first TFDS-backed source does.
"""

from lmjax.data.batches import LMBatches, eval_batches, train_batches
from lmjax.data.encoder_vocab import (
    EncoderSpecialIds,
    WordPieceTokenizer,
    encoder_special_ids,
    space_end_table,
    word_start_table,
)
from lmjax.data.packing import BATCH_KEYS, DocumentTokenStream, packed_row
from lmjax.data.segment_batches import SegmentBatches
from lmjax.data.sentence_pairs import SENTENCE_PAIR_TASKS, document_sentences
from lmjax.data.shuffle import EpochPermutation
from lmjax.data.sources import open_documents
from lmjax.data.splits import split_of_document
from lmjax.data.tokenizers import (
    HuggingFaceTokenizer,
    SentencePieceOptions,
    SentencePieceTokenizer,
    Tokenizer,
    load_or_train_tokenizer,
    loaded_tokenizer,
    trained_sentencepiece_tokenizer,
)

__all__ = [
    "BATCH_KEYS",
    "DocumentTokenStream",
    "EncoderSpecialIds",
    "EpochPermutation",
    "HuggingFaceTokenizer",
    "LMBatches",
    "SENTENCE_PAIR_TASKS",
    "SegmentBatches",
    "SentencePieceOptions",
    "SentencePieceTokenizer",
    "Tokenizer",
    "WordPieceTokenizer",
    "document_sentences",
    "encoder_special_ids",
    "eval_batches",
    "load_or_train_tokenizer",
    "loaded_tokenizer",
    "open_documents",
    "packed_row",
    "space_end_table",
    "split_of_document",
    "train_batches",
    "trained_sentencepiece_tokenizer",
    "word_start_table",
]
