//! Typed errors of the mechanism crate. Every variant names the offending input field (as a path such
//! as `rewards[1][2]`) and the offending value, so that a command-line front end can print one line
//! that tells the user what to fix.

use thiserror::Error as ThisError;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can be wrong with the input of a mechanism.
#[derive(Debug, Clone, PartialEq, ThisError)]
#[non_exhaustive]
pub enum Error {
    /// A vector or matrix that must hold at least one entry is empty.
    #[error("{field}: must not be empty")]
    Empty {
        /// The field, e.g. `rewards` or `distributions[0]`.
        field: String,
    },
    /// A value is NaN or infinite where a finite number is required.
    #[error("{field}: value {value} is not finite")]
    NonFinite {
        /// The field with its index, e.g. `rewards[1][2]`.
        field: String,
        /// The offending value.
        value: f64,
    },
    /// A value is negative where a non-negative number is required (bids, probabilities).
    #[error("{field}: value {value} is negative")]
    Negative {
        /// The field with its index.
        field: String,
        /// The offending value.
        value: f64,
    },
    /// A probability vector does not sum to one within [`crate::tol::SUM_EPS`].
    #[error("{field}: probabilities sum to {sum}, not 1 (tolerance {tol:e})", tol = crate::tol::SUM_EPS)]
    NotNormalised {
        /// The field.
        field: String,
        /// The sum that was found.
        sum: f64,
    },
    /// Two inputs that must have the same length do not.
    #[error("{field}: has {got} entries, expected {expected}")]
    LengthMismatch {
        /// The field whose length is wrong.
        field: String,
        /// The length it should have.
        expected: usize,
        /// The length it has.
        got: usize,
    },
    /// A temperature or regularisation weight is not strictly positive and finite.
    #[error("{field}: must be a finite number > 0, got {value}")]
    NonPositive {
        /// The field, e.g. `tau`.
        field: String,
        /// The offending value.
        value: f64,
    },
    /// A value that must lie in an interval does not.
    #[error("{field}: value {value} is outside {range}")]
    OutOfRange {
        /// The field.
        field: String,
        /// The offending value.
        value: f64,
        /// The allowed range, written out.
        range: &'static str,
    },
    /// Every bid is zero, so the bid weights `b_i / Σ b` are undefined.
    #[error("bids: all bids are zero; at least one agent must bid a positive amount")]
    AllBidsZero,
    /// The log-linear aggregate is undefined: the positive-bid agents' supports share no token.
    #[error(
        "distributions: the positive-bid agents' supports are disjoint, so the log-linear aggregate is undefined"
    )]
    DisjointSupports,
    /// A second-price payment was asked for where no stable sampler exists.
    #[error(
        "payment: second_price needs a stable sampler; log_linear aggregation over {vocab} tokens has none \
         (no robust monotonicity for 3+ tokens); use first_price or none, or linear aggregation"
    )]
    SecondPriceUnavailable {
        /// The vocabulary size that was given.
        vocab: usize,
    },
    /// A sampler was asked for that does not apply to the input.
    #[error("sampler: {reason}")]
    SamplerUnavailable {
        /// Why the sampler cannot be used.
        reason: &'static str,
    },
    /// Finite inputs whose result does not fit in an f64 (e.g. rewards of 1e300 over `τ = 1e-10`).
    #[error("{field}: {detail}")]
    Overflow {
        /// The input to scale, e.g. `rewards`.
        field: String,
        /// What overflowed.
        detail: String,
    },
    /// Only one of the two log-probability vectors of the importance weights was given.
    #[error("{field}: importance weights need both log_ref and log_gen, or neither")]
    IncompleteImportanceWeights {
        /// The field that is missing.
        field: String,
    },
}

impl Error {
    pub(crate) fn non_finite(field: impl Into<String>, value: f64) -> Self {
        Error::NonFinite {
            field: field.into(),
            value,
        }
    }
}

/// [`Error::NonFinite`] naming `field[j]` for the first non-finite entry of `xs`.
pub(crate) fn check_finite(field: &str, xs: &[f64]) -> Result<()> {
    match xs.iter().enumerate().find(|(_, x)| !x.is_finite()) {
        Some((j, &x)) => Err(Error::non_finite(format!("{field}[{j}]"), x)),
        None => Ok(()),
    }
}
