"""Import of published checkpoints (Hugging Face safetensors) into lmjax parameter trees.

``safetensors_checkpoint``  reading config.json and (sharded) safetensors with NumPy.
``hf_gpt``                  HF ``gpt2`` / ``openai-gpt`` -> ``lmjax.models.gpt`` config and params.
``hf_bert``                 HF ``bert`` / ``roberta`` -> ``lmjax.models.bert`` config and params.
``hf_electra``              HF ``electra`` generator / discriminator -> ``lmjax.models.electra``.
``hf_albert``               HF ``albert`` -> ``lmjax.models.albert`` config and params.
``hf_distilbert``           HF ``distilbert`` -> ``lmjax.models.distilbert`` config and params.
"""

from lmjax.convert.hf_albert import (
    albert_config_fields,
    albert_config_from_hf,
    albert_model_config,
    albert_params_from_hf,
    load_hf_albert,
)
from lmjax.convert.hf_bert import (
    bert_config_fields,
    bert_config_from_hf,
    bert_model_config,
    bert_params_from_hf,
    load_hf_bert,
)
from lmjax.convert.hf_distilbert import (
    distilbert_config_fields,
    distilbert_model_config,
    distilbert_params_from_hf,
    load_hf_distilbert,
)
from lmjax.convert.hf_electra import (
    electra_config_from_hf,
    load_hf_electra_discriminator,
    load_hf_electra_generator,
    load_hf_electra_pretraining,
)
from lmjax.convert.hf_gpt import (
    gpt_config_fields,
    gpt_config_from_hf,
    gpt_params_from_hf,
    lmjax_model_config,
    load_hf_gpt,
)
from lmjax.convert.safetensors_checkpoint import hf_config, hf_tensors, safetensors_files

__all__ = [
    "albert_config_fields",
    "albert_config_from_hf",
    "albert_model_config",
    "albert_params_from_hf",
    "load_hf_albert",
    "bert_config_fields",
    "bert_config_from_hf",
    "bert_model_config",
    "bert_params_from_hf",
    "load_hf_bert",
    "distilbert_config_fields",
    "distilbert_model_config",
    "distilbert_params_from_hf",
    "load_hf_distilbert",
    "electra_config_from_hf",
    "load_hf_electra_discriminator",
    "load_hf_electra_generator",
    "load_hf_electra_pretraining",
    "gpt_config_fields",
    "gpt_config_from_hf",
    "gpt_params_from_hf",
    "hf_config",
    "hf_tensors",
    "lmjax_model_config",
    "load_hf_gpt",
    "safetensors_files",
]
