"""The auctions from Python equal the CLI's --json report for the same options and seed (timings
aside), on the tiny test model and on the default model; bad options raise ValueError."""

import threading
import time

import pytest

from conftest import cli_json
import llm_auction
from llm_auction import Auction, mosaic_auction, token_auction


def _strip(report: dict) -> dict:
    """The report without what depends on the clock."""
    r = dict(report)
    r.pop("timings", None)
    r.pop("seconds", None)
    return r


ADS = ["EasyBake: producing baking ingredients", "KitchenFix: producing kitchen appliances"]


def test_mosaic_on_the_tiny_model_equals_the_cli(cli, tiny_model):
    args = ["-M", "3", "--max-new-tokens", "5", "--seed", "4", "--tau", "0.5"]
    expected = cli_json(
        cli,
        ["mosaic", "--query", "How do I bake cookies?", "--advertiser", ADS[0],
         "--advertiser", ADS[1], *args, "--model", tiny_model, "--json"],
    )
    phases = []
    got = mosaic_auction(
        "How do I bake cookies?",
        [("EasyBake", "producing baking ingredients"),
         {"name": "KitchenFix", "description": "producing kitchen appliances"}],
        3,
        max_new_tokens=5,
        seed=4,
        tau=0.5,
        model=tiny_model,
        progress=lambda phase, done, total: phases.append(phase),
    )
    assert _strip(got.to_dict()) == _strip(expected)
    assert got.reply == expected["reply"]
    assert [a.name for a in got.results] == ["EasyBake", "KitchenFix"]
    # Each candidate is reported as it finishes (scorings may all finish while others decode).
    assert phases.count("candidate") == 3 and "generating" in phases


def test_token_auction_on_the_tiny_model_equals_the_cli(cli, tiny_model):
    for aggregation, payment in [("linear", "second_price"), ("log_linear", "first_price")]:
        expected = cli_json(
            cli,
            ["token-auction", "--query", "Vacations in Hawaii", "--agent", "Alpha: hotels: 1.5",
             "--agent", "Beta: flights: 0.5", "--aggregation", aggregation.replace("_", "-"),
             "--payment", payment.replace("_", "-"), "--max-new-tokens", "6", "--seed", "3",
             "--model", tiny_model, "--json"],
        )
        got = token_auction(
            "Vacations in Hawaii",
            ["Alpha: hotels: 1.5", ("Beta", "flights", 0.5)],
            aggregation=aggregation,
            payment=payment,
            max_new_tokens=6,
            seed=3,
            model=tiny_model,
        )
        assert _strip(got.to_dict()) == _strip(expected)


def test_an_auction_object_keeps_its_models_and_repeats_bitwise(tiny_model):
    a = Auction(model=tiny_model)
    assert a.loaded == []
    one = a.mosaic("q", ["A: b", "B: c"], 2, max_new_tokens=3, seed=9)
    assert a.loaded == ["default"]
    two = a.mosaic("q", ["A: b", "B: c"], 2, max_new_tokens=3, seed=9)
    assert _strip(one.to_dict()) == _strip(two.to_dict())
    other = a.mosaic("q", ["A: b", "B: c"], 2, max_new_tokens=3, seed=10)
    assert isinstance(other.revenue, float)


def test_the_gil_is_released_while_the_engine_runs(tiny_model):
    a = Auction(model=tiny_model)
    a.mosaic("q", ["A: b"], 1, max_new_tokens=1)  # load first
    ticks = []
    stop = threading.Event()

    def tick():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            stop.wait(0.001)

    t = threading.Thread(target=tick)
    t.start()
    try:
        start = time.perf_counter()
        a.mosaic("q", ["A: b", "B: c"], 8, max_new_tokens=24)
        end = time.perf_counter()
    finally:
        stop.set()
        t.join()
    # With the GIL held, a thread that needs it gets a turn at most once per switch interval (5 ms)
    # and only while Python code runs; released, it ticks about once a millisecond throughout.
    inside = sum(start < x < end for x in ticks)
    assert inside >= max(5, 0.1 * (end - start) / 0.001), (inside, end - start)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"advertisers": []}, "advertiser: "),
        ({"m": 0}, "M: "),
        ({"tau": 0.0}, "tau: "),
        ({"tau_i": [1.0]}, "tau_i: "),
        ({"temperature": -1.0}, "temperature"),
        ({"generator": "oracle"}, "generator: "),
        ({"importance": "exact"}, "importance: "),
        ({"advertisers": ["no colon"]}, "advertisers[0]: "),
        ({"advertisers": [("A", "b", "c")]}, "advertisers[0]: "),
        ({"advertiser_models": {"Z": "default"}}, "advertiser_models.Z: "),
        ({"reference": "nowhere"}, 'model "nowhere"'),
    ],
)
def test_bad_auction_options_raise_value_error(tiny_model, kwargs, field):
    args = {"query": "q", "advertisers": ["A: b", "B: c"], "m": 2, "max_new_tokens": 2}
    args.update(kwargs)
    with pytest.raises(ValueError) as e:
        mosaic_auction(model=tiny_model, **args)
    assert str(e.value).startswith(field) or field in str(e.value), str(e.value)


def test_bad_token_auction_options_raise_value_error(tiny_model):
    with pytest.raises(ValueError, match=r"^agents\[1\]: "):
        token_auction("q", ["A: b: 1", "B: c: x"], model=tiny_model)
    with pytest.raises(ValueError, match=r"^aggregation: "):
        token_auction("q", ["A: b: 1"], aggregation="median", model=tiny_model)
    with pytest.raises(ValueError, match=r"^kernels"):
        Auction(kernels="fast")


def test_a_missing_model_file_is_an_error_naming_it(tmp_path):
    missing = tmp_path / "absent.gguf"
    with pytest.raises(ValueError) as e:
        mosaic_auction("q", ["A: b"], 1, max_new_tokens=1, model=missing)
    assert str(e.value).startswith("model: ") and "absent.gguf" in str(e.value)


def test_a_failing_progress_callback_raises_after_the_auction(tiny_model):
    def boom(phase, done, total):
        raise KeyError("from the callback")

    with pytest.raises(KeyError, match="from the callback"):
        mosaic_auction("q", ["A: b"], 1, max_new_tokens=2, model=tiny_model, progress=boom)


def test_mosaic_on_the_default_model_equals_the_cli(cli):
    expected = cli_json(
        cli,
        ["mosaic", "--query", "How do I bake cookies?", "--advertiser", ADS[0],
         "--advertiser", ADS[1], "-M", "2", "--max-new-tokens", "8", "--seed", "1", "--json"],
    )
    got = mosaic_auction("How do I bake cookies?", ADS, 2, max_new_tokens=8, seed=1)
    assert _strip(got.to_dict()) == _strip(expected)
    assert got.reply.strip()


def test_help_and_version():
    import pydoc

    assert llm_auction.__version__
    page = pydoc.render_doc(llm_auction.mechanism, renderer=pydoc.plaintext)
    assert "mosaic(rewards" in page and "Eq. 8" in page and "Lemma 5.2" in page
    assert "Eq. 8" in llm_auction.mechanism.mosaic.__doc__
    assert "Eq. 11" in llm_auction.mechanism.rewards_from_logprobs.__doc__
    assert "Algorithm 2" in Auction.mosaic.__doc__
