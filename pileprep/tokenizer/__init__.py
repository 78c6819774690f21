"""Tokenizer engines: the ``tokenizers`` library (reference) and the fast engine, same ids.

Importing this package registers both; see :mod:`.base` for the protocol.
"""

from pileprep.tokenizer import fast, reference  # noqa: F401 - register the engines
from pileprep.tokenizer.base import (ENGINES, EOD_TOKEN, TokenizerInfo, encode, engine_names,
                                     load_tokenizer, resolve_engine)

__all__ = ["ENGINES", "EOD_TOKEN", "TokenizerInfo", "encode", "engine_names", "load_tokenizer",
           "resolve_engine"]
