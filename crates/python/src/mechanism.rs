//! The mechanism crate on numpy arrays. Each function takes float64 arrays of the documented
//! dimensions (the Python layer converts and checks shapes first) and returns a dict of arrays.

use llm_auction_mechanism::aggregate::{Aggregation, Bids, aggregate as aggregate_dists};
use llm_auction_mechanism::dist::{Distribution, from_prob_rows};
use llm_auction_mechanism::mosaic::{Mosaic, RewardMatrix, draw_winner};
use llm_auction_mechanism::objective;
use llm_auction_mechanism::rewards::reward_rows;
use llm_auction_mechanism::rng::rng_from_seed;
use llm_auction_mechanism::stable::{RaceSeed, race as race_draw, two_token_threshold};
use llm_auction_mechanism::token_auction::{PaymentRule, TokenAuction};
use numpy::{PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use serde::de::DeserializeOwned;

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(mosaic, m)?)?;
    m.add_function(wrap_pyfunction!(token_step, m)?)?;
    m.add_function(wrap_pyfunction!(aggregate, m)?)?;
    m.add_function(wrap_pyfunction!(race, m)?)?;
    m.add_function(wrap_pyfunction!(threshold, m)?)?;
    m.add_function(wrap_pyfunction!(rewards, m)?)?;
    m.add_function(wrap_pyfunction!(kl, m)?)?;
    m.add_function(wrap_pyfunction!(objective_value, m)?)?;
    m.add_function(wrap_pyfunction!(optimal_policy, m)?)?;
    m.add_function(wrap_pyfunction!(optimal_value, m)?)?;
    Ok(())
}

/// A mechanism error as the `ValueError` Python sees: the same line as the CLI's.
pub(crate) fn value_error(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(e.to_string())
}

fn rows(a: &PyReadonlyArray2<'_, f64>) -> Vec<Vec<f64>> {
    a.as_array()
        .rows()
        .into_iter()
        .map(|r| r.to_vec())
        .collect()
}

fn vec1(a: &PyReadonlyArray1<'_, f64>) -> Vec<f64> {
    a.as_array().to_vec()
}

fn dist(a: &PyReadonlyArray1<'_, f64>, field: &str) -> PyResult<Distribution> {
    Distribution::from_probs(vec1(a), field).map_err(value_error)
}

/// A mode string (`"linear"`, `"log_linear"`, ...) parsed as the JSON filters parse it, with
/// dashes accepted for underscores as in the CLI's flags; errors name `field`.
pub(crate) fn parse_name<T: DeserializeOwned>(field: &str, s: &str) -> PyResult<T> {
    serde_json::from_value(serde_json::Value::String(s.replace('-', "_")))
        .map_err(|e| PyValueError::new_err(format!("{field}: {e}")))
}

fn array2<'py>(py: Python<'py>, v: &[Vec<f64>]) -> PyResult<Bound<'py, PyArray2<f64>>> {
    PyArray2::from_vec2(py, v).map_err(value_error)
}

/// MOSAIC on an `n x M` reward matrix (see `llm_auction.mechanism.mosaic`).
#[pyfunction]
#[pyo3(signature = (rewards, tau, log_ref=None, log_gen=None, offset=true, seed=None))]
fn mosaic<'py>(
    py: Python<'py>,
    rewards: PyReadonlyArray2<'py, f64>,
    tau: f64,
    log_ref: Option<PyReadonlyArray1<'py, f64>>,
    log_gen: Option<PyReadonlyArray1<'py, f64>>,
    offset: bool,
    seed: Option<u64>,
) -> PyResult<Bound<'py, PyDict>> {
    let matrix = RewardMatrix::from_rows(&rows(&rewards)).map_err(value_error)?;
    let (log_ref, log_gen) = (log_ref.as_ref().map(vec1), log_gen.as_ref().map(vec1));
    let out = Mosaic::new(tau)
        .map_err(value_error)?
        .with_offset(offset)
        .run_from_logprobs(&matrix, log_ref.as_deref(), log_gen.as_deref())
        .map_err(value_error)?;
    let winner = seed.map(|s| draw_winner(&out.allocation, &mut rng_from_seed(s)));
    let d = PyDict::new(py);
    d.set_item("allocation", PyArray1::from_vec(py, out.allocation))?;
    d.set_item("payments", PyArray1::from_vec(py, out.payments))?;
    d.set_item("utilities", PyArray1::from_vec(py, out.utilities))?;
    d.set_item(
        "expected_rewards",
        PyArray1::from_vec(py, out.expected_rewards),
    )?;
    d.set_item("revenue", out.revenue)?;
    d.set_item("allocation_without", array2(py, &out.allocation_without)?)?;
    d.set_item("welfare", out.welfare)?;
    d.set_item(
        "welfare_without",
        PyArray1::from_vec(py, out.welfare_without),
    )?;
    d.set_item("winner", winner)?;
    Ok(d)
}

/// One token-auction step (see `llm_auction.mechanism.token_step`).
#[pyfunction]
fn token_step<'py>(
    py: Python<'py>,
    distributions: PyReadonlyArray2<'py, f64>,
    bids: PyReadonlyArray1<'py, f64>,
    aggregation: &str,
    payment: &str,
    seed: u64,
) -> PyResult<Bound<'py, PyDict>> {
    let aggregation: Aggregation = parse_name("aggregation", aggregation)?;
    let payment: PaymentRule = parse_name("payment", payment)?;
    let dists = from_prob_rows(rows(&distributions), "distributions").map_err(value_error)?;
    let bids = Bids::new(vec1(&bids)).map_err(value_error)?;
    let out = TokenAuction::new(aggregation, payment)
        .step(&dists, &bids, &mut rng_from_seed(seed))
        .map_err(value_error)?;
    let d = PyDict::new(py);
    d.set_item("aggregate", PyArray1::from_slice(py, out.aggregate.probs()))?;
    d.set_item("token", out.token)?;
    d.set_item("payments", PyArray1::from_vec(py, out.payments))?;
    d.set_item("winner", out.winner)?;
    d.set_item("critical_bids", out.critical_bids)?;
    Ok(d)
}

/// The bid-weighted aggregate `p(q, b)` (see `llm_auction.mechanism.aggregate`).
#[pyfunction]
fn aggregate<'py>(
    py: Python<'py>,
    distributions: PyReadonlyArray2<'py, f64>,
    bids: PyReadonlyArray1<'py, f64>,
    aggregation: &str,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let aggregation: Aggregation = parse_name("aggregation", aggregation)?;
    let dists = from_prob_rows(rows(&distributions), "distributions").map_err(value_error)?;
    let bids = Bids::new(vec1(&bids)).map_err(value_error)?;
    let p = aggregate_dists(aggregation, &dists, &bids).map_err(value_error)?;
    Ok(PyArray1::from_slice(py, p.probs()))
}

/// The exponential race with its critical bids (see `llm_auction.mechanism.race`).
#[pyfunction]
fn race<'py>(
    py: Python<'py>,
    distributions: PyReadonlyArray2<'py, f64>,
    bids: PyReadonlyArray1<'py, f64>,
    seed: u64,
) -> PyResult<Bound<'py, PyDict>> {
    let dists = from_prob_rows(rows(&distributions), "distributions").map_err(value_error)?;
    let bids = Bids::new(vec1(&bids)).map_err(value_error)?;
    let omega = RaceSeed::draw(bids.len(), &mut rng_from_seed(seed));
    let out = race_draw(&dists, &bids, &omega).map_err(value_error)?;
    let d = PyDict::new(py);
    d.set_item("winner", out.winner)?;
    d.set_item("token", out.token)?;
    d.set_item("critical_bids", PyArray1::from_vec(py, out.critical_bids))?;
    Ok(d)
}

/// The two-token threshold sampler (see `llm_auction.mechanism.threshold`).
#[pyfunction]
fn threshold<'py>(
    py: Python<'py>,
    distributions: PyReadonlyArray2<'py, f64>,
    bids: PyReadonlyArray1<'py, f64>,
    aggregation: &str,
    u: f64,
) -> PyResult<Bound<'py, PyDict>> {
    let aggregation: Aggregation = parse_name("aggregation", aggregation)?;
    let dists = from_prob_rows(rows(&distributions), "distributions").map_err(value_error)?;
    let bids = Bids::new(vec1(&bids)).map_err(value_error)?;
    let out = two_token_threshold(aggregation, &dists, &bids, u).map_err(value_error)?;
    let d = PyDict::new(py);
    d.set_item("token", out.token)?;
    d.set_item("pulls_toward", out.pulls_toward)?;
    d.set_item("critical_bids", out.critical_bids)?;
    Ok(d)
}

/// Rewards from log-probabilities, Eq. 11 (see `llm_auction.mechanism.rewards_from_logprobs`).
#[pyfunction]
fn rewards<'py>(
    py: Python<'py>,
    log_pi: PyReadonlyArray2<'py, f64>,
    log_ref: PyReadonlyArray1<'py, f64>,
    tau_i: PyReadonlyArray1<'py, f64>,
    c: PyReadonlyArray1<'py, f64>,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let r = reward_rows(&vec1(&tau_i), &rows(&log_pi), &vec1(&log_ref), &vec1(&c))
        .map_err(value_error)?;
    array2(py, &r)
}

/// `KL(p ‖ q)` (see `llm_auction.mechanism.kl`).
#[pyfunction]
fn kl(p: PyReadonlyArray1<'_, f64>, q: PyReadonlyArray1<'_, f64>) -> PyResult<f64> {
    objective::kl(&dist(&p, "p")?, &dist(&q, "q")?).map_err(value_error)
}

/// The KL-regularised objective of Eq. 1 (see `llm_auction.mechanism.objective`).
#[pyfunction]
fn objective_value(
    pi: PyReadonlyArray1<'_, f64>,
    pi_ref: PyReadonlyArray1<'_, f64>,
    r: PyReadonlyArray1<'_, f64>,
    tau: f64,
) -> PyResult<f64> {
    objective::objective(&dist(&pi, "pi")?, &dist(&pi_ref, "pi_ref")?, &vec1(&r), tau)
        .map_err(value_error)
}

/// The optimal policy of Eq. 2 (see `llm_auction.mechanism.optimal_policy`).
#[pyfunction]
fn optimal_policy<'py>(
    py: Python<'py>,
    pi_ref: PyReadonlyArray1<'py, f64>,
    r: PyReadonlyArray1<'py, f64>,
    tau: f64,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let p = objective::optimal_policy(&dist(&pi_ref, "pi_ref")?, &vec1(&r), tau)
        .map_err(value_error)?;
    Ok(PyArray1::from_slice(py, p.probs()))
}

/// The optimal value `τ log Σ π_ref e^{r/τ}` (see `llm_auction.mechanism.optimal_value`).
#[pyfunction]
fn optimal_value(
    pi_ref: PyReadonlyArray1<'_, f64>,
    r: PyReadonlyArray1<'_, f64>,
    tau: f64,
) -> PyResult<f64> {
    objective::optimal_value(&dist(&pi_ref, "pi_ref")?, &vec1(&r), tau).map_err(value_error)
}
