"""The mechanisms on numpy arrays: MOSAIC and the token auction, exactly as the Rust crate computes them.

Every function validates its input in Rust (the crate ``llm-auction-mechanism``); a bad input raises
``ValueError`` with the one-line message that names the field, as ``llm-auction mechanism`` prints it.
Arrays of another dtype are converted to float64; arrays of the wrong shape are refused.

Equation numbers: MOSAIC is [SCS25] (Soumalias, Curry, Seuken, "Truthful Aggregation of LLMs with an
Application to Online Advertising", arXiv 2405.05905v1); the token auction is [DMPXZ24] (Duetting,
Mirrokni, Paes Leme, Xu, Zuo, "Mechanism Design for Large Language Models", WWW 2024) with the
constructions of the repository's docs/mechanisms.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import numpy as np

from . import _native

__all__ = [
    "MosaicResult",
    "TokenStep",
    "RaceDraw",
    "ThresholdDraw",
    "mosaic",
    "token_step",
    "aggregate",
    "race",
    "threshold",
    "rewards_from_logprobs",
    "kl",
    "objective",
    "optimal_policy",
    "optimal_value",
]


def _array(x: Any, field: str, ndim: int) -> np.ndarray:
    """``x`` as a C-contiguous float64 array of ``ndim`` dimensions, or ValueError naming ``field``."""
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{field}: not an array of numbers ({e})") from None
    if ndim == 2 and a.ndim == 1 and a.size == 0:
        a = a.reshape(0, 0)
    if a.ndim != ndim:
        raise ValueError(f"{field}: expected a {ndim}-D array, got shape {a.shape}")
    return np.ascontiguousarray(a)


def _list(a: np.ndarray) -> Any:
    return a.tolist()


@dataclass(frozen=True)
class MosaicResult:
    """Everything MOSAIC computes on one candidate set ([SCS25] Eq. 8, 10, 13; Lemma 5.5).

    Attributes:
        allocation: ``π`` over the M candidates (Eq. 8), shape (M,).
        payments: ``p_i`` per advertiser (Eq. 10, with the offset of Eq. 13 when on), shape (n,).
        utilities: ex-interim utilities ``U_i = π·r_i − p_i`` (Lemma 5.5), shape (n,).
        expected_rewards: ``π·r_i``, shape (n,).
        revenue: ``Σ_i p_i``.
        allocation_without: ``π^{−i}``, the allocation without advertiser i, shape (n, M).
        welfare: ``SW(N) = τ LSE_j(Σ_k r_kj/τ + lw_j)``.
        welfare_without: ``SW(N∖{i})`` per advertiser, shape (n,).
        winner: the drawn candidate when a seed was given, else None.
    """

    allocation: np.ndarray
    payments: np.ndarray
    utilities: np.ndarray
    expected_rewards: np.ndarray
    revenue: float
    allocation_without: np.ndarray
    welfare: float
    welfare_without: np.ndarray
    winner: Optional[int]

    def to_dict(self) -> Dict[str, Any]:
        """The fields as ``llm-auction mechanism mosaic`` prints them (lists; no ``winner`` unseeded)."""
        d: Dict[str, Any] = {
            "allocation": _list(self.allocation),
            "allocation_without": _list(self.allocation_without),
            "payments": _list(self.payments),
            "utilities": _list(self.utilities),
            "expected_rewards": _list(self.expected_rewards),
            "revenue": self.revenue,
            "welfare": self.welfare,
            "welfare_without": _list(self.welfare_without),
        }
        if self.winner is not None:
            d["winner"] = self.winner
        return d


def mosaic(
    rewards: Any,
    tau: float,
    log_ref: Any = None,
    log_gen: Any = None,
    offset: bool = True,
    seed: Optional[int] = None,
) -> MosaicResult:
    """MOSAIC on a reward matrix ([SCS25] Algorithm 1, or Algorithm 2 with importance weights).

    The allocation is the softmax of ``Σ_i r_ij / τ + lw_j`` (Eq. 8) with ``lw_j = log π_ref(y_j) −
    log π_gen(y_j)`` when ``log_ref`` and ``log_gen`` are given (both or neither), and 0 otherwise.
    Payments are Rochet payments (Eq. 10) with the agent-specific offset (Eq. 13) unless ``offset``
    is False; an advertiser whose rewards are all 0 pays 0 (Lemma 5.2).

    Args:
        rewards: ``r_ij``, shape (n advertisers, M candidates).
        tau: the platform's KL weight ``τ > 0``.
        log_ref: ``log π_ref(y_j)`` per candidate, shape (M,), or None.
        log_gen: ``log π_gen(y_j)`` per candidate, shape (M,), or None.
        offset: apply the offset of Eq. 13 (the paper's default).
        seed: when given, draw the winning candidate from the allocation with this seed.

    Raises:
        ValueError: a bad input, naming the field (e.g. ``rewards[1][0]: value nan is not finite``).
    """
    d = _native.mosaic(
        _array(rewards, "rewards", 2),
        float(tau),
        None if log_ref is None else _array(log_ref, "log_ref", 1),
        None if log_gen is None else _array(log_gen, "log_gen", 1),
        bool(offset),
        None if seed is None else int(seed),
    )
    return MosaicResult(**d)


@dataclass(frozen=True)
class TokenStep:
    """One token-auction step ([DMPXZ24]).

    Attributes:
        aggregate: the bid-weighted aggregate distribution, shape (V,).
        token: the drawn token.
        payments: each agent's payment for this token, shape (n,).
        winner: the agent whose distribution the token came from (the exponential race), or None.
        critical_bids: per agent, the bid at which the outcome switches (second price), or None.
    """

    aggregate: np.ndarray
    token: int
    payments: np.ndarray
    winner: Optional[int]
    critical_bids: Optional[List[Optional[float]]]

    def to_dict(self) -> Dict[str, Any]:
        """The fields as ``llm-auction mechanism token`` prints them."""
        return {
            "aggregate": _list(self.aggregate),
            "token": self.token,
            "payments": _list(self.payments),
            "winner": self.winner,
            "critical_bids": self.critical_bids,
        }


def token_step(
    distributions: Any,
    bids: Any,
    aggregation: str = "linear",
    payment: str = "second_price",
    seed: int = 0,
) -> TokenStep:
    """One step of the token auction: aggregate, stable sampling, payments ([DMPXZ24]).

    Linear aggregation draws by the exponential race (construction B of docs/mechanisms.md), which
    gives second-price (critical-bid) payments; log-linear aggregation has a stable sampler only
    for two-token vocabularies (construction C).

    Args:
        distributions: the agents' next-token distributions ``q_i``, shape (n, V), rows summing to 1.
        bids: ``b_i ≥ 0``, at least one positive, shape (n,).
        aggregation: ``"linear"`` or ``"log_linear"``.
        payment: ``"second_price"``, ``"first_price"`` or ``"none"``.
        seed: the seed of the step's random draw.

    Raises:
        ValueError: a bad input, naming the field.
    """
    d = _native.token_step(
        _array(distributions, "distributions", 2),
        _array(bids, "bids", 1),
        str(aggregation),
        str(payment),
        int(seed),
    )
    return TokenStep(**d)


def aggregate(distributions: Any, bids: Any, aggregation: str = "linear") -> np.ndarray:
    """The bid-weighted aggregate ``p(q, b)`` ([DMPXZ24]; docs/mechanisms.md, aggregation).

    Linear: ``p = Σ_i w_i q_i`` with ``w_i = b_i / Σ_j b_j``; log-linear: ``p ∝ Π_i q_i^{w_i}``.
    """
    return _native.aggregate(
        _array(distributions, "distributions", 2), _array(bids, "bids", 1), str(aggregation)
    )


@dataclass(frozen=True)
class RaceDraw:
    """The exponential race (construction B): the winning agent, its token, and critical bids.

    Agent i wins the race iff ``b_i > critical_bids[i]`` (the others' bids and the seed fixed).
    """

    winner: int
    token: int
    critical_bids: np.ndarray


def race(distributions: Any, bids: Any, seed: int = 0) -> RaceDraw:
    """Stable sampling of the linear aggregate by the exponential race (construction B).

    The seed draws one ``Exp(1)`` clock and one uniform per agent, as a token-auction step does.
    """
    return RaceDraw(
        **_native.race(_array(distributions, "distributions", 2), _array(bids, "bids", 1), int(seed))
    )


@dataclass(frozen=True)
class ThresholdDraw:
    """Two-token stable sampling (construction C) with closed-form critical bids.

    Attributes:
        token: 0 (A) iff ``u ≤ p_A(q, b)``, else 1 (B).
        pulls_toward: per agent, the token its bid pulls toward, or None.
        critical_bids: per agent, the outcome is ``pulls_toward[i]`` iff ``b_i > critical_bids[i]``;
            None when no bid of i changes the outcome.
    """

    token: int
    pulls_toward: List[Optional[int]]
    critical_bids: List[Optional[float]]


def threshold(distributions: Any, bids: Any, aggregation: str, u: float) -> ThresholdDraw:
    """The two-token threshold sampler (construction C) on the uniform ``u ∈ (0, 1)``."""
    return ThresholdDraw(
        **_native.threshold(
            _array(distributions, "distributions", 2),
            _array(bids, "bids", 1),
            str(aggregation),
            float(u),
        )
    )


def rewards_from_logprobs(
    log_pi: Any, log_ref: Any, tau_i: Any = None, c: Any = None
) -> np.ndarray:
    """Advertiser rewards from sequence log-probabilities ([SCS25] Eq. 11, the DPO inversion).

    ``r_ij = τ_i (log π_i(y_j) − log π_ref(y_j)) + c_i``. The constant ``c_i = log Z_i`` shifts
    every candidate equally and changes neither allocation nor payments, so it defaults to 0.

    Args:
        log_pi: ``log π_i(y_j)``, shape (n, M) (a 1-D array is one advertiser).
        log_ref: ``log π_ref(y_j)``, shape (M,).
        tau_i: ``τ_i > 0`` per advertiser, shape (n,); default 1.
        c: ``c_i`` per advertiser, shape (n,); default 0.

    Returns:
        The reward matrix, shape (n, M), ready for :func:`mosaic`.
    """
    try:
        one_advertiser = np.ndim(log_pi) == 1 and np.size(log_pi) > 0
    except ValueError:  # ragged rows: _array names the field
        one_advertiser = False
    lp = _array([log_pi] if one_advertiser else log_pi, "log_pi", 2)
    n = lp.shape[0]
    t = np.ones(n) if tau_i is None else _array(tau_i, "tau_i", 1)
    cc = np.zeros(n) if c is None else _array(c, "c", 1)
    return _native.rewards(lp, _array(log_ref, "log_ref", 1), t, cc)


def kl(p: Any, q: Any) -> float:
    """``KL(p ‖ q) = Σ_y p(y) log(p(y)/q(y))``; ``+inf`` when p puts mass where q has none."""
    return _native.kl(_array(p, "p", 1), _array(q, "q", 1))


def objective(pi: Any, pi_ref: Any, r: Any, tau: float) -> float:
    """The platform's objective ``J(π) = Σ_y π(y) r(y) − τ KL(π ‖ π_ref)`` ([SCS25] Eq. 1)."""
    return _native.objective_value(
        _array(pi, "pi", 1), _array(pi_ref, "pi_ref", 1), _array(r, "rewards", 1), float(tau)
    )


def optimal_policy(pi_ref: Any, r: Any, tau: float) -> np.ndarray:
    """The maximiser of Eq. 1, ``π_r ∝ π_ref exp(r/τ)`` ([SCS25] Eq. 2), computed in log space."""
    return _native.optimal_policy(_array(pi_ref, "pi_ref", 1), _array(r, "rewards", 1), float(tau))


def optimal_value(pi_ref: Any, r: Any, tau: float) -> float:
    """The optimal value ``J(π_r) = τ log Σ_y π_ref(y) exp(r(y)/τ)``."""
    return _native.optimal_value(_array(pi_ref, "pi_ref", 1), _array(r, "rewards", 1), float(tau))
