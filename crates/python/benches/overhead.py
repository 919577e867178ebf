"""The overhead of llm_auction.mechanism.mosaic() from Python versus the same call in Rust.

n = 2 advertisers, M = 16 candidates, importance weights, a seeded draw (as
crates/mechanism/examples/mosaic_call.rs does in Rust). Prints the median over rounds of the mean
time per call for: the Rust call, the raw extension function (numpy in, dict out) and the
documented wrapper (conversion, checks, the result dataclass). A benchmark, not a test: run it on
a quiet machine with the wheel installed (scripts/python-tests.sh --release) from the repository:

    python crates/python/benches/overhead.py
"""

import json
import os
import statistics
import subprocess
import time

import numpy as np

from llm_auction import _native, mechanism

N, M, ROUNDS, CALLS = 2, 16, 31, 5000


def per_call_us(f) -> float:
    rounds = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for s in range(CALLS):
            f(s)
        rounds.append((time.perf_counter() - start) / CALLS * 1e6)
    return statistics.median(rounds)


def main() -> None:
    rng = np.random.default_rng(1)
    r = rng.uniform(-2, 2, (N, M))
    lr, lg = -rng.uniform(0, 30, M), -rng.uniform(0, 30, M)
    wrapper = per_call_us(lambda s: mechanism.mosaic(r, 1.0, lr, lg, seed=s))
    raw = per_call_us(lambda s: _native.mosaic(r, 1.0, lr, lg, True, s))
    root = os.path.join(os.path.dirname(__file__), "..", "..", "..")
    out = subprocess.run(
        ["cargo", "run", "-q", "--release", "-p", "llm-auction-mechanism", "--example",
         "mosaic_call", "--", str(N), str(M), str(ROUNDS)],
        cwd=root, capture_output=True, text=True, check=True,
    )
    rust = json.loads(out.stdout)["median_ns"] / 1e3
    print(f"n = {N}, M = {M}, median of {ROUNDS} rounds")
    print(f"{'call':<34} {'us/call':>9} {'vs Rust':>8}")
    for name, t in [("Rust (mechanism crate)", rust), ("Python, _native.mosaic", raw),
                    ("Python, mechanism.mosaic", wrapper)]:
        print(f"{name:<34} {t:>9.2f} {t / rust:>7.1f}x")


if __name__ == "__main__":
    main()
