"""Type stubs of the extension module ``llm_auction._native`` (use the documented wrappers in
``llm_auction.mechanism`` and ``llm_auction.auction``)."""

from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import numpy.typing as npt

__version__: str

_F1 = npt.NDArray[np.float64]
_F2 = npt.NDArray[np.float64]

def mosaic(
    rewards: _F2,
    tau: float,
    log_ref: Optional[_F1] = None,
    log_gen: Optional[_F1] = None,
    offset: bool = True,
    seed: Optional[int] = None,
) -> Dict[str, Any]: ...
def token_step(
    distributions: _F2, bids: _F1, aggregation: str, payment: str, seed: int
) -> Dict[str, Any]: ...
def aggregate(distributions: _F2, bids: _F1, aggregation: str) -> _F1: ...
def race(distributions: _F2, bids: _F1, seed: int) -> Dict[str, Any]: ...
def threshold(distributions: _F2, bids: _F1, aggregation: str, u: float) -> Dict[str, Any]: ...
def rewards(log_pi: _F2, log_ref: _F1, tau_i: _F1, c: _F1) -> _F2: ...
def kl(p: _F1, q: _F1) -> float: ...
def objective_value(pi: _F1, pi_ref: _F1, r: _F1, tau: float) -> float: ...
def optimal_policy(pi_ref: _F1, r: _F1, tau: float) -> _F1: ...
def optimal_value(pi_ref: _F1, r: _F1, tau: float) -> float: ...

class Auction:
    def __init__(
        self,
        models: Optional[str] = None,
        model: Optional[str] = None,
        kernels: str = "native",
        token_budget: Optional[int] = None,
        max_seqs: Optional[int] = None,
        kv_blocks: Optional[int] = None,
        prefix_cache: bool = True,
    ) -> None: ...
    def loaded(self) -> List[str]: ...
    def mosaic(
        self, options: str, progress: Optional[Callable[[str, int, int], None]] = None
    ) -> str: ...
    def token(
        self, options: str, progress: Optional[Callable[[str, int, int], None]] = None
    ) -> str: ...
