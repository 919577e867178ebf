"""llm_auction.mechanism against the CLI's JSON filters (same bits), independent oracles (numpy
formulas, the DSIC inequality, Lemma 5.2), and bad inputs (ValueError naming the field)."""

import json
import math

import numpy as np
import pytest

from conftest import cli_json, run_cli
from llm_auction import mechanism

CASES = 40


def _mosaic_case(rng: np.random.Generator):
    n, m = int(rng.integers(1, 5)), int(rng.integers(1, 17))
    case = {
        "rewards": (rng.normal(size=(n, m)) * rng.choice([0.01, 1.0, 30.0])).tolist(),
        "tau": float(rng.choice([0.05, 0.5, 1.0, 7.0])),
        "offset": bool(rng.integers(2)),
    }
    if rng.integers(2):
        case["log_ref"] = (-rng.exponential(20.0, size=m)).tolist()
        case["log_gen"] = (-rng.exponential(20.0, size=m)).tolist()
    if rng.integers(2):
        case["seed"] = int(rng.integers(0, 2**63))
    return case


def test_mosaic_equals_the_cli_bit_for_bit(cli):
    rng = np.random.default_rng(11)
    for _ in range(CASES):
        case = _mosaic_case(rng)
        expected = cli_json(cli, ["mechanism", "mosaic"], json.dumps(case))
        got = mechanism.mosaic(**case)
        # JSON carries the shortest round-trip decimal of each double, so == is bitwise equality.
        assert got.to_dict() == expected, case


def test_token_step_equals_the_cli_bit_for_bit(cli):
    rng = np.random.default_rng(12)
    combos = [
        ("linear", "second_price"),
        ("linear", "first_price"),
        ("linear", "none"),
        ("log_linear", "first_price"),
        ("log_linear", "second_price"),  # only two-token vocabularies
    ]
    for k in range(CASES):
        aggregation, payment = combos[k % len(combos)]
        n = int(rng.integers(1, 5))
        v = 2 if payment == "second_price" and aggregation == "log_linear" else int(rng.integers(2, 9))
        bids = rng.exponential(1.0, size=n)
        bids[rng.random(n) < 0.2] = 0.0
        if bids.sum() == 0:
            bids[0] = 1.0
        case = {
            "distributions": rng.dirichlet(np.ones(v), size=n).tolist(),
            "bids": bids.tolist(),
            "aggregation": aggregation,
            "payment": payment,
            "seed": int(rng.integers(0, 2**63)),
        }
        expected = cli_json(cli, ["mechanism", "token"], json.dumps(case))
        got = mechanism.token_step(**case)
        assert got.to_dict() == expected, case


def test_the_error_is_the_cli_line(cli):
    bad = [
        {"rewards": [[1.0, 2.0]], "tau": 0.0},
        {"rewards": [[1.0, 2.0]], "tau": 1.0, "log_ref": [0.0, 0.0]},
        {"rewards": [[1.0, 2.0]], "tau": 1.0, "log_ref": [0.0], "log_gen": [0.0]},
        {"rewards": [], "tau": 1.0},
    ]
    for case in bad:
        out = run_cli(cli, ["mechanism", "mosaic"], json.dumps(case))
        assert out.returncode == 1
        with pytest.raises(ValueError) as e:
            mechanism.mosaic(**case)
        assert out.stderr.strip() == f"error: {e.value}", case


@pytest.mark.parametrize(
    "call, field",
    [
        (lambda: mechanism.mosaic([[1.0, float("nan")]], 1.0), "rewards[0][1]: "),
        (lambda: mechanism.mosaic([[1.0, 2.0]], -1.0), "tau: "),
        (lambda: mechanism.mosaic([[1.0, 2.0]], float("inf")), "tau: "),
        (lambda: mechanism.mosaic([1.0, 2.0], 1.0), "rewards: expected a 2-D array"),
        (lambda: mechanism.mosaic([[1.0, 2.0], [1.0]], 1.0), "rewards: "),
        (lambda: mechanism.mosaic([["a", "b"]], 1.0), "rewards: "),
        (lambda: mechanism.mosaic([[1.0, 2.0]], 1.0, log_gen=[0.0, 0.0]), "log_ref: "),
        (lambda: mechanism.mosaic([[1.0, 2.0]], 1.0, [0.0], [0.0, 0.0]), "log_ref: "),
        (lambda: mechanism.mosaic([[1.0, 2.0]], 1.0, [0.0, 0.0], [[0.0, 0.0]]), "log_gen: expected"),
        (lambda: mechanism.token_step([[0.5, 0.5]], [-1.0]), "bids[0]: "),
        (lambda: mechanism.token_step([[0.5, 0.5]], [0.0]), "bids: "),
        (lambda: mechanism.token_step([[0.5, 0.5], [0.9, 0.3]], [1.0, 1.0]), "distributions[1]: "),
        (lambda: mechanism.token_step([[0.5, 0.5]], [1.0, 2.0]), "bids: "),
        (lambda: mechanism.token_step([[0.5, 0.5]], [1.0], aggregation="median"), "aggregation: "),
        (lambda: mechanism.token_step([[0.5, 0.5]], [1.0], payment="gratis"), "payment: "),
        (
            lambda: mechanism.token_step([[0.2, 0.3, 0.5]], [1.0], "log_linear", "second_price"),
            "payment: ",
        ),
        (lambda: mechanism.rewards_from_logprobs([[0.0, float("nan")]], [0.0, 0.0]), "log_pi[0][1]: "),
        (lambda: mechanism.rewards_from_logprobs([[0.0]], [0.0], tau_i=[0.0]), "tau_i[0]: "),
        (lambda: mechanism.optimal_policy([0.5, 0.5], [1.0], 1.0), "rewards: "),
        (lambda: mechanism.kl([0.5, 0.6], [0.5, 0.5]), "p: "),
    ],
)
def test_bad_input_raises_value_error_naming_the_field(call, field):
    with pytest.raises(ValueError) as e:
        call()
    assert str(e.value).startswith(field), str(e.value)


def test_other_dtypes_and_layouts_are_converted():
    r = np.array([[1, 2, 3], [0, 0, 0]], dtype=np.int32)
    a = mechanism.mosaic(r, 1.0)
    b = mechanism.mosaic(np.asfortranarray(r.astype(np.float32)), 1.0)
    c = mechanism.mosaic(np.array([[1.0, 9.0, 2.0, 9.0, 3.0, 9.0], [0.0] * 6])[:, ::2], 1.0)
    for x in (b, c):
        assert np.array_equal(a.allocation, x.allocation)
        assert np.array_equal(a.payments, x.payments)


def test_zero_reward_advertiser_pays_nothing():
    # Lemma 5.2: an advertiser whose rewards are all 0 pays 0 and gains 0, with or without weights.
    rng = np.random.default_rng(3)
    for _ in range(50):
        n, m = int(rng.integers(2, 5)), int(rng.integers(1, 12))
        r = rng.normal(size=(n, m)) * 5
        zero = int(rng.integers(n))
        r[zero] = 0.0
        lw = {}
        if rng.integers(2):
            lw = {"log_ref": -rng.exponential(5, m), "log_gen": -rng.exponential(5, m)}
        out = mechanism.mosaic(r, float(rng.uniform(0.1, 3)), **lw)
        assert out.payments[zero] == 0.0
        assert out.utilities[zero] == 0.0


def test_truthful_report_is_a_best_response():
    # DSIC: against any fixed reports of the others, advertiser i's expected utility under its true
    # rewards is at least what any misreport gives it: π(r')·r_i − p_i(r') ≤ π(r)·r_i − p_i(r).
    rng = np.random.default_rng(5)
    for _ in range(200):
        n, m = int(rng.integers(1, 4)), int(rng.integers(2, 10))
        tau = float(rng.uniform(0.2, 3))
        r = rng.normal(size=(n, m)) * 3
        lw = {"log_ref": -rng.exponential(5, m), "log_gen": -rng.exponential(5, m)}
        offset = bool(rng.integers(2))
        truthful = mechanism.mosaic(r, tau, offset=offset, **lw)
        i = int(rng.integers(n))
        lie = r.copy()
        lie[i] = rng.normal(size=m) * float(rng.choice([0.1, 3, 30]))
        lying = mechanism.mosaic(lie, tau, offset=offset, **lw)
        u_truth = float(truthful.allocation @ r[i] - truthful.payments[i])
        u_lie = float(lying.allocation @ r[i] - lying.payments[i])
        assert u_truth >= u_lie - 1e-9 * max(1.0, abs(u_truth)), (u_truth, u_lie)


def test_eq_11_and_the_optimum_against_numpy():
    rng = np.random.default_rng(8)
    n, m = 3, 7
    log_pi, log_ref = -rng.exponential(9, (n, m)), -rng.exponential(9, m)
    tau_i, c = rng.uniform(0.1, 2, n), rng.normal(size=n)
    got = mechanism.rewards_from_logprobs(log_pi, log_ref, tau_i, c)
    # Eq. 11 written out, the same float operations in the same order: bitwise equal.
    assert np.array_equal(got, tau_i[:, None] * (log_pi - log_ref[None, :]) + c[:, None])
    one = mechanism.rewards_from_logprobs(log_pi[0], log_ref)
    assert np.array_equal(one, (log_pi[0] - log_ref)[None, :])

    pi_ref = rng.dirichlet(np.ones(m))
    r, tau = rng.normal(size=m) * 2, 0.7
    z = np.log(pi_ref) + r / tau
    expected = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    np.testing.assert_allclose(mechanism.optimal_policy(pi_ref, r, tau), expected, rtol=1e-12)
    v = tau * math.log(float(np.sum(pi_ref * np.exp(r / tau))))
    assert mechanism.optimal_value(pi_ref, r, tau) == pytest.approx(v, rel=1e-12)
    # J(π_r) is the optimal value, and any other policy does no better (Eq. 1-2).
    pi_r = mechanism.optimal_policy(pi_ref, r, tau)
    assert mechanism.objective(pi_r, pi_ref, r, tau) == pytest.approx(v, rel=1e-10)
    other = rng.dirichlet(np.ones(m))
    assert mechanism.objective(other, pi_ref, r, tau) <= v + 1e-12
    kl = float(np.sum(other * np.log(other / pi_ref)))
    assert mechanism.kl(other, pi_ref) == pytest.approx(kl, rel=1e-12)


def test_aggregation_race_and_thresholds():
    q = np.array([[0.8, 0.2], [1.0, 0.0], [0.0, 1.0]])
    b = np.array([1.0, 2.0, 2.0])
    # The linear aggregate is the bid-weighted average (the Google blog's example: 0.56, 0.44).
    np.testing.assert_allclose(mechanism.aggregate(q, b), [0.56, 0.44], rtol=1e-12)
    geo = np.exp((b / b.sum()) @ np.log(np.array([[0.5, 0.5], [0.9, 0.1], [0.3, 0.7]])))
    np.testing.assert_allclose(
        mechanism.aggregate([[0.5, 0.5], [0.9, 0.1], [0.3, 0.7]], b, "log_linear"),
        geo / geo.sum(),
        rtol=1e-12,
    )
    # The race winner keeps winning above its critical bid and loses below it (stability).
    rng = np.random.default_rng(9)
    for seed in range(30):
        d = rng.dirichlet(np.ones(4), size=3)
        bids = rng.uniform(0.1, 2, 3)
        draw = mechanism.race(d, bids, seed)
        for i in range(3):
            theta = draw.critical_bids[i]
            up, down = bids.copy(), bids.copy()
            up[i], down[i] = theta * 1.001 + 1e-9, theta * 0.999
            assert mechanism.race(d, up, seed).winner == i
            if theta > 0 and down[i] > 0:
                assert mechanism.race(d, down, seed).winner != i
    t = mechanism.threshold([[0.9, 0.1], [0.2, 0.8]], [1.0, 1.0], "linear", 0.5)
    assert t.token == 0 and t.pulls_toward == [0, 1]
