//! The auctions' request bodies ([`MosaicInput`], [`TokenInput`]: the CLI's options as JSON fields)
//! checked against this server's limits and its loaded models.

use super::AppState;
use super::error::{ApiError, parse};
use crate::models::Registry;
use llm_auction_engine::auction_input::{MosaicInput, MosaicJob, TokenInput, TokenJob};
use llm_auction_engine::limits::{MAX_ADVERTISERS, MAX_AGENTS};

/// Checks that `name` is a loaded entry (`field` names it in the error).
fn loaded(reg: &Registry, field: &str, name: &str) -> Result<(), ApiError> {
    if reg.get(name).is_err() {
        let names: Vec<String> = reg.models().map(|m| m.info().name.clone()).collect();
        return Err(ApiError::bad(format!(
            "{field}: no model {name:?} (models: {})",
            names.join(", ")
        )));
    }
    Ok(())
}

/// `n` is at most this server's `max` (`flag` sets it).
fn within(field: &str, n: usize, max: usize, flag: &str) -> Result<(), ApiError> {
    if n > max {
        return Err(ApiError::bad(format!(
            "{field}: {n} is more than this server allows ({max}, {flag})"
        )));
    }
    Ok(())
}

/// `POST /v1/mosaic`'s body, checked.
pub(crate) fn mosaic(text: &str, st: &AppState, reg: &Registry) -> Result<MosaicJob, ApiError> {
    let lim = &st.limits;
    let input: MosaicInput = parse(text)?;
    within(
        "advertisers",
        input.advertisers.len(),
        lim.max_advertisers,
        "--max-advertisers",
    )?;
    let job = input.check(MAX_ADVERTISERS)?;
    within("m", job.cfg.m, lim.max_m, "--max-m")?;
    within(
        "max_new_tokens",
        job.cfg.max_new_tokens,
        lim.max_new_tokens,
        "--max-new-tokens",
    )?;
    loaded(reg, "reference", &job.reference)?;
    loaded(reg, "generator_model", &job.generator)?;
    for (a, e) in job.ads.iter().zip(&job.advertisers) {
        loaded(reg, &format!("advertiser_models.{}", a.name), e)?;
    }
    Ok(job)
}

/// `POST /v1/token-auction`'s body, checked.
pub(crate) fn token(text: &str, st: &AppState, reg: &Registry) -> Result<TokenJob, ApiError> {
    let lim = &st.limits;
    let input: TokenInput = parse(text)?;
    within(
        "agents",
        input.agents.len(),
        lim.max_advertisers,
        "--max-advertisers",
    )?;
    let job = input.check(MAX_AGENTS)?;
    within(
        "max_new_tokens",
        job.cfg.max_new_tokens,
        lim.max_new_tokens,
        "--max-new-tokens",
    )?;
    for (a, e) in job.agents.iter().zip(&job.entries) {
        loaded(reg, &format!("agent_models.{}", a.name), e)?;
    }
    Ok(job)
}
