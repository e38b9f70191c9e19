"""lmjax: the transformer language-model lineage as pure JAX functions."""

__version__ = "0.1.0"
