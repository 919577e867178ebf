"""llm_auction: auctions over what an LLM writes, from Python.

* :mod:`llm_auction.mechanism`: the exact mechanisms on numpy arrays: MOSAIC ([SCS25] Soumalias,
  Curry, Seuken, NeurIPS 2025: allocation Eq. 8, Rochet payments Eq. 10 with the offset Eq. 13,
  rewards from log-probabilities Eq. 11, the objective Eq. 1-2) and the token auction ([DMPXZ24]
  Duetting, Mirrokni, Paes Leme, Xu, Zuo, WWW 2024: aggregation, stable sampling, critical bids).
* :class:`Auction`, :func:`mosaic_auction`, :func:`token_auction`: the auctions end to end on the
  default model (SmolLM2-135M-Instruct), a local model, or local and remote entries of a models file.

The numbers are those of the Rust crates behind the CLI ``llm-auction``: the same input and seed
give bitwise the same output.
"""

from . import mechanism
from ._native import __version__
from .auction import Auction, Report, mosaic_auction, token_auction

__all__ = ["Auction", "Report", "mechanism", "mosaic_auction", "token_auction", "__version__"]
