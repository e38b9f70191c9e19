"""Made-up SQuAD paragraphs and the small tokenizer the SQuAD feature and decoding tests share."""

import random

from lmjax.data.task_examples import SquadExample
from lmjax.data.tokenizers import SentencePieceOptions, trained_sentencepiece_tokenizer

_NOUNS = ("river castle engine garden teacher harbor village mountain library festival bridge "
          "tower market island forest").split()
_VERBS = "built crossed opened painted visited described founded protected".split()
_NAMES = ("Anna", "Boris", "Chen", "Dara", "Emeka", "Farah")


def sentence(rng: random.Random) -> str:
    """'The <noun> was <verb> in <year> by <name> of the <noun>.'"""
    return (f"The {rng.choice(_NOUNS)} was {rng.choice(_VERBS)} in {1700 + rng.randrange(300)} "
            f"by {rng.choice(_NAMES)} of the {rng.choice(_NOUNS)}.")


def paragraph(seed: int, sentences: int = 6) -> str:
    rng = random.Random(seed)
    return " ".join(sentence(rng) for _ in range(sentences))


def squad_tokenizer():
    """A 320-piece unigram model with [CLS] [SEP] [MASK], trained on 400 made-up sentences."""
    rng = random.Random(0)
    lines = [sentence(rng) for _ in range(400)]
    options = SentencePieceOptions(vocab_size=320,
                                   user_defined_symbols=("[CLS]", "[SEP]", "[MASK]"))
    return trained_sentencepiece_tokenizer(lines, options)


def example_at_words(uid, context, first_word, last_word, question="Who built it?"):
    """An example whose answer is words [first_word, last_word] of ``context``."""
    words = context.split()
    start = len(" ".join(words[:first_word])) + (1 if first_word else 0)
    answer = " ".join(words[first_word:last_word + 1])
    assert context[start:start + len(answer)] == answer
    return SquadExample(uid, question, context, (answer,), (start,))
