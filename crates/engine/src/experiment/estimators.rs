//! The experiments' estimators: per query, `log Ẑ` and the two optimal-sampling proxies
//! ([`estimate_z`]); per instance and `M`, the rows of every advertiser ([`instance_rows`]). The
//! equations are the mechanism crate's (`objective`, `mosaic`, `rewards`, `metrics`); this module
//! gathers their inputs from the models and the candidates.

use super::{ExperimentConfig, ExperimentModels, Instance, Row, ZEstimate, advertisers};
use crate::error::Result;
use crate::lm::{LanguageModel, expect_len, reply_text};
use crate::mosaic::{Candidate, Generator, advertiser_system_prompt, continuation_for};
use crate::request::{GenerateRequest, ScoreRequest};
use crate::roles::Sessions;
use llm_auction_mechanism::dist::inverse_cdf;
use llm_auction_mechanism::logspace::softmax;
use llm_auction_mechanism::metrics::reward_gain;
use llm_auction_mechanism::mosaic::{Mosaic, RewardMatrix, leave_one_out_scores};
use llm_auction_mechanism::objective::{
    log_optimal_at, log_partition_estimate, self_normalised_expected_log_optimal,
};
use llm_auction_mechanism::rewards::reward_from_logprobs;
use llm_auction_mechanism::rng::{rng_from_seed, uniform_open01};
use llm_auction_model::model::DEFAULT_SYSTEM_PROMPT;
use llm_auction_model::sampling::SamplingParams;

/// Estimates `log Z` and both optimal-sampling proxies of one query from `k` untempered and `k`
/// tempered reference samples (see the module docs of [`crate::experiment`]).
///
/// # Errors
/// Model errors; mechanism errors for non-finite scores.
pub fn estimate_z(
    models: &ExperimentModels<'_>,
    inst: &Instance,
    cfg: &ExperimentConfig,
) -> Result<ZEstimate> {
    let ads = advertisers(inst);
    let (reference, adv_model) = (models.reference, models.advertiser);
    let roles: Vec<(String, &dyn LanguageModel)> = vec![
        ("reference".into(), reference),
        ("advertisers".into(), adv_model),
    ];
    let mut sessions = Sessions::open(&roles)?;
    let (ref_s, adv_s) = (sessions.of(0), sessions.of(1));
    let ref_ids = reference
        .chat_turn_ids(DEFAULT_SYSTEM_PROMPT, &inst.query)
        .map_err(sessions.err(ref_s))?;
    let adv_ids: Vec<Vec<u32>> = ads
        .iter()
        .map(|a| adv_model.chat_turn_ids(&advertiser_system_prompt(a), &inst.query))
        .collect::<Result<_>>()
        .map_err(sessions.err(adv_s))?;
    let mut seeds = rng_from_seed(0x5EED_0000 + inst.id as u64);
    let tempered = SamplingParams {
        temperature: cfg.temperature,
        top_p: cfg.top_p,
        ..SamplingParams::default()
    };
    // K untempered samples (for log Ẑ), then K tempered ones (footnote 8); seeds drawn in that order.
    let eos = reference.info().eos_ids.clone();
    let gens: Vec<GenerateRequest> = [SamplingParams::default(), tempered]
        .into_iter()
        .flat_map(|params| std::iter::repeat_n(params, cfg.z_samples))
        .map(|params| GenerateRequest {
            prompt: ref_ids.clone(),
            params,
            max_new_tokens: cfg.max_new_tokens,
            stop: eos.clone(),
            seed: rand::Rng::next_u64(&mut seeds),
        })
        .collect();
    let n = gens.len();
    let samples = sessions
        .get(ref_s)
        .generate(gens, &mut |_| {})
        .and_then(|g| expect_len(reference.info(), "generate", g, n))
        .map_err(sessions.err(ref_s))?;
    // log π_ref of every sample: reported while sampling, or else scored under π_ref.
    let raw: Option<Vec<f64>> = samples
        .iter()
        .map(|g| g.logprobs_raw.as_ref().map(|lp| lp.iter().sum()))
        .collect();
    let log_ref_all = match raw {
        Some(v) => v,
        None => {
            let reqs = samples
                .iter()
                .map(|g| ScoreRequest {
                    prompt: ref_ids.clone(),
                    continuation: g.tokens.clone(),
                })
                .collect();
            sessions
                .get(ref_s)
                .score(reqs, &mut |_| {})
                .and_then(|s| expect_len(reference.info(), "score", s, n))
                .map_err(sessions.err(ref_s))?
                .into_iter()
                .map(|s| s.total_logprob)
                .collect()
        }
    };
    let k = cfg.z_samples.min(samples.len());
    let (log_ref, tempered_ref) = log_ref_all.split_at(k);
    let ref_proxy = tempered_ref.iter().sum::<f64>() / tempered_ref.len().max(1) as f64;
    let samples = &samples[..k];
    let conts = samples
        .iter()
        .map(|g| {
            continuation_for(adv_model, reference, g, &|| {
                reply_text(reference, &g.tokens)
            })
        })
        .collect::<Result<Vec<_>>>()
        .map_err(sessions.err(adv_s))?;
    let reqs: Vec<ScoreRequest> = adv_ids
        .iter()
        .flat_map(|p| {
            conts.iter().map(|c| ScoreRequest {
                prompt: p.clone(),
                continuation: c.clone(),
            })
        })
        .collect();
    let n = reqs.len();
    let scores: Vec<f64> = sessions
        .get(adv_s)
        .score(reqs, &mut |_| {})
        .and_then(|s| expect_len(adv_model.info(), "score", s, n))
        .map_err(sessions.err(adv_s))?
        .into_iter()
        .map(|s| s.total_logprob)
        .collect();
    // r(y_k) = Σ_i r_i(y_k), each by Eq. 11 with the auctions' τ_i.
    let r: Vec<f64> = (0..k)
        .map(|s| {
            (0..ads.len())
                .map(|i| {
                    reward_from_logprobs(cfg.advertiser_tau, scores[i * k + s], log_ref[s], 0.0)
                })
                .sum::<std::result::Result<f64, _>>()
        })
        .collect::<std::result::Result<_, _>>()?;
    let log_z = log_partition_estimate(&r, cfg.tau)?;
    let opt_proxy = self_normalised_expected_log_optimal(log_ref, &r, cfg.tau, log_z)?;
    Ok(ZEstimate {
        query_id: inst.id,
        log_z,
        opt_proxy,
        ref_proxy,
        samples: k,
    })
}

/// Every row of one instance (all `M` of the grid, every advertiser), from one auction's candidates.
///
/// # Errors
/// Mechanism errors.
pub fn instance_rows(
    inst: &Instance,
    seed: u64,
    generator: Generator,
    candidates: &[Candidate],
    z: &ZEstimate,
    cfg: &ExperimentConfig,
) -> Result<Vec<Row>> {
    let n = inst.advertisers.len();
    let tau = cfg.tau;
    let u = uniform_open01(&mut rng_from_seed(
        seed ^ 0xD4A3_u64.rotate_left(32) ^ inst.id as u64,
    ));
    let mut rows = Vec::new();
    for &m in &cfg.ms {
        let m = m.min(candidates.len());
        let c = &candidates[..m];
        let rewards: Vec<Vec<f64>> = (0..n)
            .map(|i| c.iter().map(|x| x.rewards[i]).collect())
            .collect();
        let lw: Vec<f64> = c.iter().map(|x| x.log_weight).collect();
        let matrix = RewardMatrix::from_rows(&rewards)?;
        let with = Mosaic::new(tau)?.run(&matrix, Some(&lw))?;
        let without_offset = Mosaic::new(tau)?
            .with_offset(false)
            .run(&matrix, Some(&lw))?;
        let winner = inverse_cdf(&with.allocation, u);
        let log_opt =
            |x: &Candidate| log_optimal_at(x.log_ref, x.rewards.iter().sum::<f64>(), tau, z.log_z);
        let expected_logprob_opt = c
            .iter()
            .zip(&with.allocation)
            .map(|(x, p)| p * log_opt(x))
            .sum();
        for (i, ad) in inst.advertisers.iter().enumerate() {
            let name = ad.name.to_lowercase();
            let keep: Vec<usize> = (0..m)
                .filter(|&j| !c[j].text.to_lowercase().contains(&name))
                .collect();
            let pool: Vec<usize> = if keep.is_empty() {
                (0..m).collect()
            } else {
                keep.clone()
            };
            // Footnote 9: the allocation without i, restricted to the pool (softmax of β_{−i}).
            let beta_all = leave_one_out_scores(&matrix, i, &lw, tau)?;
            let beta: Vec<f64> = pool.iter().map(|&j| beta_all[j]).collect();
            let alloc_without = softmax(&beta);
            let r_without: Vec<f64> = pool.iter().map(|&j| rewards[i][j]).collect();
            let gain = reward_gain(&rewards[i], &with.allocation, &r_without, &alloc_without)?;
            let reward_without: f64 = r_without
                .iter()
                .zip(&alloc_without)
                .map(|(r, p)| r * p)
                .sum();
            rows.push(Row {
                query_id: inst.id,
                seed,
                generator,
                m,
                agent: i,
                agent_name: ad.name.clone(),
                winner,
                logprob_opt_reply: log_opt(&c[winner]),
                expected_logprob_opt,
                log_z: z.log_z,
                opt_proxy: z.opt_proxy,
                ref_proxy: z.ref_proxy,
                reward_with: with.expected_rewards[i],
                reward_without,
                n_without: keep.len(),
                reward_gain: gain,
                payment: with.payments[i],
                payment_no_offset: without_offset.payments[i],
                utility_gain: gain - with.payments[i],
                utility_gain_no_offset: gain - without_offset.payments[i],
                revenue: with.revenue,
                revenue_no_offset: without_offset.revenue,
                mentioned: c[winner].text.to_lowercase().contains(&name),
            });
        }
    }
    Ok(rows)
}
