"""A DSA model to measure quality on: a pretrained dense Llama-family LM retrofitted with lightning indexers.

``RetrofitDSA`` implements :class:`~sglang_indexcache.inprocess.LayerwiseDSA`; ``tiny_model`` builds a random
one for tests; ``load`` reads the base model and the shipped indexers. Engine-free: torch and transformers only.
"""

from .indexer import IndexerConfig, LightningIndexer
from .retrofit import RetrofitDSA, dense_token_losses
from .tiny import tiny_model

__all__ = ["IndexerConfig", "LightningIndexer", "RetrofitDSA", "dense_token_losses", "tiny_model"]
