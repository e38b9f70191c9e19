"""Import of published checkpoints (Hugging Face safetensors) into lmjax parameter trees.

``safetensors_checkpoint``  reading config.json and (sharded) safetensors with NumPy.
``hf_gpt``                  HF ``gpt2`` / ``openai-gpt`` -> ``lmjax.models.gpt`` config and params.
``hf_bert``                 HF ``bert`` / ``roberta`` -> ``lmjax.models.bert`` config and params.
"""

from lmjax.convert.hf_bert import (
    bert_config_fields,
    bert_config_from_hf,
    bert_model_config,
    bert_params_from_hf,
    load_hf_bert,
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
    "bert_config_fields",
    "bert_config_from_hf",
    "bert_model_config",
    "bert_params_from_hf",
    "load_hf_bert",
    "gpt_config_fields",
    "gpt_config_from_hf",
    "gpt_params_from_hf",
    "hf_config",
    "hf_tensors",
    "lmjax_model_config",
    "load_hf_gpt",
    "safetensors_files",
]
