//! Upper limits on the sizes a caller chooses (the command line, the service, Python): a size from
//! outside is checked against these before anything is allocated by it, and a larger one is an
//! [`EngineError::Auction`] naming the field. They are far above the papers' settings (M <= 64,
//! a handful of advertisers, 64 new tokens); the service sets its own, lower, limits on top.

use crate::error::{EngineError, Result};

/// Candidate replies per MOSAIC auction (`M`).
pub const MAX_CANDIDATES: usize = 4096;

/// Advertisers of one MOSAIC auction.
pub const MAX_ADVERTISERS: usize = 256;

/// Agents of one token auction.
pub const MAX_AGENTS: usize = 256;

/// New tokens per reply (a model's context length bounds it further).
pub const MAX_NEW_TOKENS: usize = 1 << 16;

/// Points `K` of the token auction's λ sweep.
pub const MAX_SWEEP_POINTS: usize = 10_000;

/// `Ok` when `value <= max`, else an error naming `field` and the limit.
///
/// # Errors
/// [`EngineError::Auction`].
pub fn check(field: &str, value: usize, max: usize) -> Result<()> {
    if value > max {
        return Err(EngineError::Auction {
            field: field.into(),
            message: format!("{value} is above the limit of {max}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn limit_errors_name_the_field() {
        assert!(super::check("M", 4096, super::MAX_CANDIDATES).is_ok());
        let e = super::check("M", usize::MAX, super::MAX_CANDIDATES).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("M: {} is above the limit of 4096", usize::MAX)
        );
    }
}
