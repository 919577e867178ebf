//! The mechanisms as JSON filters (feature `json`): one JSON object in, one out. The front ends
//! (`llm-auction mechanism`, the service's `/v1/mechanism/*`) call these, so the input and output
//! shapes are one stable interface (README.md documents them).
//!
//! * [`mosaic_json`]: `{"rewards": [[..]], "tau", "log_ref"?, "log_gen"?, "offset"?, "seed"?}` →
//!   every field of [`MosaicOutcome`] and, when seeded, the drawn `winner`.
//! * [`token_json`]: `{"distributions": [[..]], "bids", "aggregation", "payment", "seed"}` → the
//!   aggregate, the token, payments, the winner and the critical bids.

use crate::aggregate::{Aggregation, Bids};
use crate::dist::from_prob_rows;
use crate::error::Error;
use crate::mosaic::{Mosaic, MosaicOutcome, RewardMatrix, draw_winner};
use crate::rng::rng_from_seed;
use crate::token_auction::{PaymentRule, TokenAuction};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// What is wrong with a JSON input, in one line naming the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum JsonError {
    /// Not JSON, not one object, or a field of the wrong shape (`path: message`).
    #[error("{0}")]
    Parse(String),
    /// The mechanism refused the values.
    #[error(transparent)]
    Mechanism(#[from] Error),
}

/// Parses exactly one JSON object into `T`; errors name the offending field
/// (`"advertisers[1].name: ..."`), and anything after the object but whitespace is refused.
///
/// # Errors
/// [`JsonError::Parse`].
pub fn parse<T: DeserializeOwned>(text: &str) -> Result<T, JsonError> {
    let de = &mut serde_json::Deserializer::from_str(text);
    match serde_path_to_error::deserialize(&mut *de) {
        Ok(v) => match de.end() {
            Ok(()) => Ok(v),
            Err(e) => Err(JsonError::Parse(format!(
                "invalid JSON input: {e} (after the one object)"
            ))),
        },
        Err(e) => {
            let path = one_line(&e.path().to_string());
            let inner = one_line(&e.into_inner().to_string());
            if path == "." || path == "?" {
                return Err(JsonError::Parse(format!("invalid JSON input: {inner}")));
            }
            Err(JsonError::Parse(format!("{path}: {inner}")))
        }
    }
}

/// `text` with its control characters escaped (`\n` as `\\n`): an unknown field name taken from
/// the input must not break the error's one line.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Input of [`mosaic_json`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MosaicIn {
    rewards: Vec<Vec<f64>>,
    tau: f64,
    log_ref: Option<Vec<f64>>,
    log_gen: Option<Vec<f64>>,
    #[serde(default = "default_true")]
    offset: bool,
    seed: Option<u64>,
}

fn default_true() -> bool {
    true
}

/// Output of [`mosaic_json`]: every field of the outcome, and the drawn candidate when seeded.
#[derive(Debug, Serialize)]
struct MosaicOut {
    #[serde(flatten)]
    outcome: MosaicOutcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    winner: Option<usize>,
}

/// Input of [`token_json`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenIn {
    distributions: Vec<Vec<f64>>,
    bids: Vec<f64>,
    aggregation: Aggregation,
    payment: PaymentRule,
    seed: u64,
}

/// Output of [`token_json`].
#[derive(Debug, Serialize)]
struct TokenOut {
    aggregate: Vec<f64>,
    token: usize,
    payments: Vec<f64>,
    winner: Option<usize>,
    critical_bids: Option<Vec<Option<f64>>>,
}

/// MOSAIC (Eq. 8-13) on a JSON text: the output JSON.
///
/// # Errors
/// [`JsonError`] naming the field.
///
/// ```
/// let out = llm_auction_mechanism::json::mosaic_json(r#"{"rewards": [[0, 1]], "tau": 1}"#).unwrap();
/// assert!(out.starts_with(r#"{"allocation":"#));
/// ```
pub fn mosaic_json(text: &str) -> Result<String, JsonError> {
    let input: MosaicIn = parse(text)?;
    let rewards = RewardMatrix::from_rows(&input.rewards)?;
    let outcome = Mosaic::new(input.tau)?
        .with_offset(input.offset)
        .run_from_logprobs(&rewards, input.log_ref.as_deref(), input.log_gen.as_deref())?;
    let winner = input
        .seed
        .map(|s| draw_winner(&outcome.allocation, &mut rng_from_seed(s)));
    to_json(&MosaicOut { outcome, winner })
}

/// One token-auction step (aggregate, stable sampling, payments) on a JSON text: the output JSON.
///
/// # Errors
/// [`JsonError`] naming the field.
pub fn token_json(text: &str) -> Result<String, JsonError> {
    let input: TokenIn = parse(text)?;
    let dists = from_prob_rows(input.distributions, "distributions")?;
    let bids = Bids::new(input.bids)?;
    let rule = TokenAuction::new(input.aggregation, input.payment);
    let out = rule.step(&dists, &bids, &mut rng_from_seed(input.seed))?;
    to_json(&TokenOut {
        aggregate: out.aggregate.probs().to_vec(),
        token: out.token,
        payments: out.payments,
        winner: out.winner,
        critical_bids: out.critical_bids,
    })
}

/// Serialises an output; a non-finite number in it is an error, never a JSON `null`.
fn to_json<T: Serialize>(out: &T) -> Result<String, JsonError> {
    let text = serde_json::to_string(out).map_err(|e| JsonError::Parse(e.to_string()))?;
    if text.contains("null") {
        // The only optional fields are `winner` and `critical_bids` entries; anything else `null`
        // is a NaN or an infinity that serde_json wrote as null.
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| JsonError::Parse(e.to_string()))?;
        if let Some(field) = null_number(&v, "") {
            return Err(JsonError::Mechanism(Error::Overflow {
                field,
                detail: "the result is not a finite number".into(),
            }));
        }
    }
    Ok(text)
}

/// The path of a `null` that stands for a number (outside `winner` and `critical_bids`).
fn null_number(v: &serde_json::Value, path: &str) -> Option<String> {
    match v {
        serde_json::Value::Null => Some(path.to_string()),
        serde_json::Value::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, x)| null_number(x, &format!("{path}[{i}]"))),
        serde_json::Value::Object(o) => o
            .iter()
            .filter(|(k, _)| k.as_str() != "winner" && k.as_str() != "critical_bids")
            .find_map(|(k, x)| {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                null_number(x, &p)
            }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_object_and_nothing_after_it() {
        // Regression: trailing garbage and a second object were accepted.
        let ok = r#"{"rewards": [[0, 1]], "tau": 1}"#;
        assert!(mosaic_json(ok).is_ok());
        assert!(mosaic_json(&format!("{ok}  \n")).is_ok());
        for bad in [format!("{ok} xyz"), format!("{ok}{ok}"), format!("{ok} 1")] {
            let e = mosaic_json(&bad).unwrap_err().to_string();
            assert!(e.contains("after the one object"), "{bad}: {e}");
        }
    }

    #[test]
    fn errors_are_one_line_whatever_the_field_names() {
        // Found by the mechanism_json fuzz target: an unknown field named with a newline.
        let e = mosaic_json("{\"0age\\re\\ngat\": 1}")
            .unwrap_err()
            .to_string();
        assert!(!e.contains('\n') && !e.contains('\r'), "{e:?}");
        assert!(e.contains("unknown field"), "{e}");
    }

    #[test]
    fn errors_name_the_field() {
        let e = mosaic_json(r#"{"rewards": [[0, "x"]], "tau": 1}"#).unwrap_err();
        assert!(e.to_string().starts_with("rewards[0][1]: "), "{e}");
        let e = token_json(r#"{"distributions": [[0.5, 0.5]], "bids": [1], "aggregation": "linear", "payment": "none", "seed": 1, "x": 2}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }
}
