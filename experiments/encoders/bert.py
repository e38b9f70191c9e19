r"""BERT (Devlin et al. 2019) pre-trained with masked language modelling and next-sentence
prediction; the base of the other encoder experiments in this folder.

Sizes (``size=``): ``tiny`` (4 layers, 128 wide, a 2048-piece SentencePiece vocabulary trained
into the workdir, 128-token rows) trains on the embedded Python-docs corpus on a CPU; ``mini``,
``small``, ``medium`` are Turc et al.'s miniatures; ``base`` (110M) and ``large`` (340M) are the
paper's, on Wikipedia prepared with TFDS and BERT's uncased WordPiece vocabulary.

Run the tiny variant::

    lmjax train --config experiments/encoders/bert.py:size=tiny --workdir runs/bert_tiny

Rows are ``[CLS] A [SEP] B [SEP]`` built as ``create_pretraining_data.py`` builds them (B is the
true continuation or, half the time, a span of another document); the masking is BERT's (15% of
the tokens, at most 20 per 128-token row, 80% [MASK] / 10% random / 10% kept), drawn afresh in
every step from the step's key. The tiny run's MLM loss should fall well below the 7.6 nats of
a uniform guess over 2048 pieces and below the 6.0 of guessing by frequency: in our runs 5.78
held-out after 300 steps (NSP still at chance) and 5.31 after 1000 (NSP accuracy 0.73); the
README's encoder section has the figures.

The paper's recipe for ``base`` (README and ``optimization.py``; text-models spec section 3)::

    lmjax train --config experiments/encoders/bert.py:size=base --workdir runs/bert_base \
        --config.data.source=tfds:wikipedia/20230601.en --config.data.data_dir=/data/tfds \
        --config.tokenizer.kind=wordpiece --config.tokenizer.path=/models/bert/vocab.txt

AdamW (weight decay 0.01, betas (0.9, 0.999), eps 1e-6, no decay on biases and LayerNorms),
learning rate 1e-4 with 10k warmup steps and linear decay, batch 256 for 1M steps; here all at
length 128 (the paper's last 10% at 512 is a second run restored with ``seq_len=512``). The base
model should reach an MLM accuracy near 0.7 and NSP accuracy near 0.98, as BERT's README reports.
"""

import ml_collections

from lmjax import axes, models
from lmjax.config import parse_experiment_arg

# size -> BERT preset; tiny trains on the embedded corpus, the others on prepared TFDS data.
SIZES = {
    "tiny": "tiny",
    "mini": "mini",
    "small": "small",
    "medium": "medium",
    "base": "base",
    "large": "large",
}
TINY_VOCAB = 2048
TINY_SEQ_LEN = 128
ENCODER_SPECIALS = ("[CLS]", "[SEP]", "[MASK]")  # pieces a trained tokenizer must have


TINY_LAYERS = 4


def tiny_model_overrides() -> dict:
    """Field values that give a family's ``tiny`` preset the CPU runs' shape: 4 layers, 2048
    pieces, 128 positions, no dropout (a few hundred steps do not overfit)."""
    return dict(
        vocab_size=TINY_VOCAB,
        max_len=TINY_SEQ_LEN,
        num_layers=TINY_LAYERS,
        hidden_dropout=0.0,
        attention_dropout=0.0,
    )


def encoder_experiment(
    model: ml_collections.ConfigDict,
    objective: dict,
    *,
    tiny: bool,
    sentence_pairs: str,
    source: str = "python_docs",
) -> ml_collections.ConfigDict:
    """Returns an unlocked encoder pre-training experiment around ``model`` and ``objective``.

    Args:
        model: the model section (``lmjax.models.config_dict``).
        objective: the objective section (name + options; vocabulary ids come from the tokenizer).
        tiny: CPU settings on the embedded corpus, else the papers' batch and schedule.
        sentence_pairs: 'nsp' (BERT), 'sop' (ALBERT) or 'none' (RoBERTa's FULL-SENTENCES).
        source: the data source of the non-tiny sizes.
    """
    config = ml_collections.ConfigDict()
    config.model = model
    config.objective = objective
    seq_len = TINY_SEQ_LEN if tiny else 128
    config.data = dict(
        source="python_docs" if tiny else source,
        data_dir="",  # TFDS data_dir ('' = $LMJAX_DATA_DIR or ~/.cache/lmjax/tensorflow_datasets)
        train_split="train",
        eval_split="validation",
        seq_len=seq_len,
        text_key="text",
        document_mask=False,  # segment rows: attention sees the whole [CLS] A [SEP] B [SEP]
        shuffle_seed=0,
        format="segments",  # [CLS] A [SEP] B [SEP] rows (lmjax.data.segment_batches)
        sentence_pairs=sentence_pairs,
        short_seq_prob=0.1,  # create_pretraining_data.py: a random shorter target length, drawn
        # per document as the reference does
    )
    config.tokenizer = dict(
        kind="sentencepiece",  # or 'wordpiece' with path= a vocab.txt (BERT's own)
        path="",  # '' = train a SentencePiece model on the train split, cached in the workdir
        vocab_size=TINY_VOCAB,
        model_type="unigram",
        byte_fallback=True,
        character_coverage=1.0,
        user_defined_symbols=ENCODER_SPECIALS,
    )
    config.optimizer = dict(
        name="adamw",
        learning_rate=1e-3 if tiny else 1e-4,
        b1=0.9,
        b2=0.999,
        eps=1e-6,
        weight_decay=0.01,
        weight_decay_mask="matrices",  # no decay on biases and LayerNorms (optimization.py)
        schedule="warmup_linear",
        warmup_steps=10_000,
        end_learning_rate_fraction=0.0,
        clip_grad_norm=1.0,
    )
    config.train = dict(
        steps=300 if tiny else 1_000_000,
        global_batch=32 if tiny else 256,
        grad_accum=1,
        seed=0,
        eval_every=100 if tiny else 10_000,
        eval_batches=4 if tiny else 50,
        log_every=10 if tiny else 100,
        checkpoint_every=100 if tiny else 10_000,
        keep_checkpoints=3,
    )
    if tiny:  # 10% of the run, following --config.train.steps
        config.optimizer.warmup_steps = (config.train.get_ref("steps") * 0.1).to_int()
    config.mesh = [("data", -1), ("fsdp", 1), ("tensor", 1)]
    config.rules = [tuple(rule) for rule in axes.DEFAULT_RULES]
    return config


def get_config(arg=None):
    """Returns the BERT experiment; ``arg`` is ``'size=<tiny|mini|small|medium|base|large>'``."""
    arg = parse_experiment_arg(arg, size="tiny")
    if arg.size not in SIZES:
        raise ValueError(f"bert.py: unknown size {arg.size!r}; choose one of {', '.join(SIZES)}.")
    tiny = arg.size == "tiny"
    overrides = tiny_model_overrides() if tiny else {}
    model = models.config_dict("bert", SIZES[arg.size], **overrides)
    objective = dict(name="mlm_nsp", selection="fixed", max_predictions=20)
    config = encoder_experiment(
        model, objective, tiny=tiny, sentence_pairs="nsp", source="tfds:wikipedia/20230601.en"
    )
    config.tokenizer.vocab_size = config.model.get_ref("vocab_size")  # one override sets both
    return config.lock()
