//! Reading server responses without trusting them: every field is checked for presence, type and
//! range, and a violation is an error naming the field, never a panic.

use serde_json::Value;

/// A problem with a response, as a message naming the field.
pub type Bad = String;

/// `v[key]`.
pub fn get<'a>(v: &'a Value, key: &str) -> Result<&'a Value, Bad> {
    v.get(key)
        .ok_or_else(|| format!("the response has no field {key:?}"))
}

/// `v[key]` as an array.
pub fn array<'a>(v: &'a Value, key: &str) -> Result<&'a Vec<Value>, Bad> {
    get(v, key)?
        .as_array()
        .ok_or_else(|| format!("field {key:?} is not an array"))
}

/// `v[key]` as a string.
pub fn string<'a>(v: &'a Value, key: &str) -> Result<&'a str, Bad> {
    get(v, key)?
        .as_str()
        .ok_or_else(|| format!("field {key:?} is not a string"))
}

/// `v[key]` as a count or size (a non-negative integer that fits in usize).
pub fn size(v: &Value, key: &str) -> Result<usize, Bad> {
    get(v, key)?
        .as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| format!("field {key:?} is not a non-negative integer"))
}

/// `v` as a token id below `vocab`.
pub fn token(v: &Value, what: &str, vocab: usize) -> Result<u32, Bad> {
    let id = v
        .as_u64()
        .ok_or_else(|| format!("{what}: {v} is not a token id"))?;
    if id >= vocab as u64 {
        return Err(format!(
            "{what}: token {id} is outside the vocabulary of {vocab}"
        ));
    }
    Ok(id as u32)
}

/// A list of token ids below `vocab`.
pub fn tokens(v: &Value, what: &str, vocab: usize) -> Result<Vec<u32>, Bad> {
    v.as_array()
        .ok_or_else(|| format!("{what} is not an array"))?
        .iter()
        .map(|t| token(t, what, vocab))
        .collect()
}

/// `v[key]` as a finite log-probability (<= a small rounding margin above 0).
pub fn logprob(v: &Value, key: &str) -> Result<f64, Bad> {
    let x = get(v, key)?
        .as_f64()
        .ok_or_else(|| format!("field {key:?} is not a number"))?;
    check_logprob(x, key)
}

/// `x` as a finite log-probability.
pub fn check_logprob(x: f64, what: &str) -> Result<f64, Bad> {
    if x.is_finite() && x <= 1e-3 {
        Ok(x.min(0.0))
    } else {
        Err(format!("{what}: {x} is not a log-probability"))
    }
}

/// `v[key]` as a probability in (0, 1], returned as its logarithm.
pub fn prob_as_logprob(v: &Value, key: &str) -> Result<f64, Bad> {
    let p = get(v, key)?
        .as_f64()
        .ok_or_else(|| format!("field {key:?} is not a number"))?;
    if p.is_finite() && p > 0.0 && p <= 1.0 + 1e-6 {
        Ok(p.min(1.0).ln())
    } else {
        Err(format!("field {key:?}: {p} is not a probability in (0, 1]"))
    }
}
