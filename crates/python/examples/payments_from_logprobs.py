"""MOSAIC payments for log-probabilities computed elsewhere (transformers, vLLM, an API).

You sampled M candidate replies from a context-aware generator and scored each one under the
reference LLM, the generator and every advertiser's LLM: per-token log-probabilities, as
``model(...).logits.log_softmax(-1).gather(...)`` gives them in transformers. This script turns
them into rewards (Eq. 11 of Soumalias, Curry, Seuken), runs MOSAIC with importance weights
(Algorithm 2: allocation Eq. 8, Rochet payments Eq. 10 with the offset Eq. 13) and prints who pays
what. Run: ``python payments_from_logprobs.py [scores.json]``, the file holding the four arrays below.
"""

import json
import sys

import numpy as np

from llm_auction import mechanism

# Per-token log-probabilities of 4 candidates (ragged: each reply has its own length).
SAMPLE = {
    "reference": [[-2.1, -0.4, -1.3], [-1.7, -0.9, -0.2, -2.6], [-3.0, -0.1], [-1.1, -1.9, -0.7]],
    "generator": [[-1.2, -0.3, -0.8], [-1.0, -0.6, -0.2, -1.4], [-2.2, -0.1], [-0.9, -1.2, -0.5]],
    "advertisers": {
        "EasyBake": [[-0.9, -0.2, -0.7], [-2.5, -1.1, -0.4, -3.0], [-1.8, -0.1], [-1.4, -2.2, -0.9]],
        "KitchenFix": [[-2.8, -0.6, -1.5], [-0.8, -0.5, -0.1, -1.2], [-3.3, -0.2], [-1.0, -1.6, -0.6]],
    },
}


def main() -> None:
    scores = SAMPLE if len(sys.argv) < 2 else json.load(open(sys.argv[1]))
    seq = lambda rows: np.array([sum(r) for r in rows])  # sequence log-prob = sum over tokens
    log_ref, log_gen = seq(scores["reference"]), seq(scores["generator"])
    names = list(scores["advertisers"])
    log_adv = np.stack([seq(scores["advertisers"][n]) for n in names])

    rewards = mechanism.rewards_from_logprobs(log_adv, log_ref)  # Eq. 11, τ_i = 1
    out = mechanism.mosaic(rewards, tau=1.0, log_ref=log_ref, log_gen=log_gen, seed=0)

    print("allocation over candidates:", np.round(out.allocation, 4))
    print(f"winner: candidate {out.winner}")
    print(f"{'advertiser':<12} {'E[reward]':>10} {'payment':>10} {'utility':>10}")
    for i, n in enumerate(names):
        print(f"{n:<12} {out.expected_rewards[i]:>10.4f} {out.payments[i]:>10.4f} {out.utilities[i]:>10.4f}")
    print(f"revenue: {out.revenue:.4f}")
    assert np.all(np.isfinite(out.payments)) and abs(out.allocation.sum() - 1) < 1e-12


if __name__ == "__main__":
    main()
