//! `llm-auction experiment plot DIR`: the analogues of the MOSAIC paper's figures from
//! `DIR/results.csv`, as PNG files in `DIR/figures/`, and `DIR/summary.json` / a markdown summary on
//! stdout with the numbers the paper reports.
//!
//! Every curve is a mean over instances with a 95 % confidence interval (mean ± Student-t quantile × standard error);
//! Pearson correlations carry a Fisher-z 95 % interval. Per-instance quantities (log-probability,
//! revenue, totals over advertisers) are taken once per instance; reward and utility gains are per
//! (instance, advertiser) in the correlation and scatter plots, as in the paper.

mod charts;
mod markdown;
mod stats;

pub use markdown::markdown;
pub use stats::{Ci, mean_ci, pearson_ci, trim};

use anyhow::{Context, Result};
use charts::{Series, line_chart, scatter_chart};
use llm_auction_engine::experiment::{Row, generator_name, read_rows};
use llm_auction_engine::mosaic::Generator;
use llm_auction_mechanism::metrics::LinearFit;
use plotters::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// A least-squares fit and the points it was fitted on.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Fit {
    /// The line.
    #[serde(flatten)]
    pub fit: LinearFit,
    /// Points.
    pub n: usize,
}

/// The numbers of the summary.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// Instances per generator.
    pub instances: BTreeMap<String, usize>,
    /// Per generator and M: log π_r of the returned reply.
    pub logprob_opt: BTreeMap<String, BTreeMap<usize, Ci>>,
    /// Per generator and M: expected log π_r over the allocation.
    pub expected_logprob_opt: BTreeMap<String, BTreeMap<usize, Ci>>,
    /// The paper's proxy for sampling from the optimum (footnote 8), mean over queries.
    pub ref_proxy: Option<Ci>,
    /// Self-normalised `E_{π_r}[log π_r]` from untempered reference samples, mean over queries.
    pub opt_proxy: Option<Ci>,
    /// Per generator and M: total reward gain.
    pub reward_gain: BTreeMap<String, BTreeMap<usize, Ci>>,
    /// Per generator and M: revenue.
    pub revenue: BTreeMap<String, BTreeMap<usize, Ci>>,
    /// Per generator and M: total utility gain.
    pub utility_gain: BTreeMap<String, BTreeMap<usize, Ci>>,
    /// Per generator and M: Pearson(reward gain, utility gain), with offset.
    pub pearson_offset: BTreeMap<String, BTreeMap<usize, Ci>>,
    /// The same without offset.
    pub pearson_no_offset: BTreeMap<String, BTreeMap<usize, Ci>>,
    /// Least-squares fits for M > 4: `generator/offset|no_offset`.
    pub fits: BTreeMap<String, Fit>,
    /// Share of returned replies mentioning the advertiser, per generator and M.
    pub mention_rate: BTreeMap<String, BTreeMap<usize, Ci>>,
}

/// Records `c` as generator `g`'s value at `m`.
fn put(map: &mut BTreeMap<String, BTreeMap<usize, Ci>>, g: &str, m: usize, c: Ci) {
    map.entry(g.to_string()).or_default().insert(m, c);
}

/// Draws every figure and returns the summary.
///
/// # Errors
/// Unreadable results or drawing errors.
pub fn plot(dir: &Path) -> Result<Summary> {
    let rows = read_rows(&dir.join("results.csv")).context("reading results.csv")?;
    let figs = dir.join("figures");
    std::fs::create_dir_all(&figs).with_context(|| format!("creating {}", figs.display()))?;
    // Group rows by (generator, m, instance).
    type Key = (Generator, usize);
    let mut by_gm: BTreeMap<Key, BTreeMap<(u32, u64), Vec<&Row>>> = BTreeMap::new();
    for r in &rows {
        by_gm
            .entry((r.generator, r.m))
            .or_default()
            .entry((r.query_id, r.seed))
            .or_default()
            .push(r);
    }
    let mut s = Summary::default();
    let gens: Vec<Generator> = {
        let mut g: Vec<Generator> = by_gm.keys().map(|k| k.0).collect();
        g.dedup();
        g
    };
    for ((g, m), insts) in &by_gm {
        let g = generator_name(*g);
        let per_inst =
            |f: &dyn Fn(&[&Row]) -> f64| -> Vec<f64> { insts.values().map(|rs| f(rs)).collect() };
        s.instances.insert(g.to_string(), insts.len());
        put(
            &mut s.logprob_opt,
            g,
            *m,
            mean_ci(&per_inst(&|rs| rs[0].logprob_opt_reply)),
        );
        put(
            &mut s.expected_logprob_opt,
            g,
            *m,
            mean_ci(&per_inst(&|rs| rs[0].expected_logprob_opt)),
        );
        put(
            &mut s.reward_gain,
            g,
            *m,
            mean_ci(&per_inst(&|rs| rs.iter().map(|r| r.reward_gain).sum())),
        );
        put(
            &mut s.revenue,
            g,
            *m,
            mean_ci(&per_inst(&|rs| rs[0].revenue)),
        );
        put(
            &mut s.utility_gain,
            g,
            *m,
            mean_ci(&per_inst(&|rs| rs.iter().map(|r| r.utility_gain).sum())),
        );
        let obs: Vec<&Row> = insts.values().flatten().copied().collect();
        let rg: Vec<f64> = obs.iter().map(|r| r.reward_gain).collect();
        let ug: Vec<f64> = obs.iter().map(|r| r.utility_gain).collect();
        let ugn: Vec<f64> = obs.iter().map(|r| r.utility_gain_no_offset).collect();
        if let Some(c) = pearson_ci(&rg, &ug) {
            put(&mut s.pearson_offset, g, *m, c);
        }
        if let Some(c) = pearson_ci(&rg, &ugn) {
            put(&mut s.pearson_no_offset, g, *m, c);
        }
        let mentions: Vec<f64> = obs
            .iter()
            .map(|r| f64::from(u8::from(r.mentioned)))
            .collect();
        put(&mut s.mention_rate, g, *m, mean_ci(&mentions));
    }
    let per_query = |f: fn(&Row) -> f64| -> Ci {
        let v: BTreeMap<u32, f64> = rows.iter().map(|r| (r.query_id, f(r))).collect();
        mean_ci(&v.values().copied().collect::<Vec<_>>())
    };
    if !rows.is_empty() {
        s.ref_proxy = Some(per_query(|r| r.ref_proxy));
        s.opt_proxy = Some(per_query(|r| r.opt_proxy));
    }
    let colors = [RED, BLUE, GREEN, MAGENTA];
    fn label(g: Generator) -> &'static str {
        match g {
            Generator::ContextAware => "context-aware",
            Generator::Reference => "reference (baseline)",
        }
    }
    // One series per generator present in `m`, in the generators' order (the maps' key order too).
    let series_of = |m: &BTreeMap<String, BTreeMap<usize, Ci>>, suffix: &str| -> Vec<Series> {
        gens.iter()
            .filter_map(|&g| Some((g, m.get(generator_name(g))?)))
            .enumerate()
            .map(|(k, (g, pts))| Series {
                name: format!("{}{suffix}", label(g)),
                color: colors[k % colors.len()],
                points: pts.iter().map(|(&m, c)| (m as f64, *c)).collect(),
            })
            .collect()
    };
    line_chart(
        &figs.join("fig1a_logprob_optimal.png"),
        "Log-probability of the returned reply under the optimal policy",
        "log π_r(y)",
        &series_of(&s.logprob_opt, ""),
        &[
            s.ref_proxy.map(|c| {
                (
                    "proxy π̂_opt (footnote 8): π_ref samples under π_ref",
                    c.mean,
                    BLACK,
                )
            }),
            s.opt_proxy.map(|c| {
                (
                    "E_π_r[log π_r], untempered (self-normalised)",
                    c.mean,
                    RGBColor(128, 128, 128),
                )
            }),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>(),
    )?;
    line_chart(
        &figs.join("fig1b_reward_gain.png"),
        "Total advertiser reward gain",
        "reward gain (nats)",
        &series_of(&s.reward_gain, ""),
        &[],
    )?;
    line_chart(
        &figs.join("fig2a_payments.png"),
        "Total payments (revenue)",
        "payments",
        &series_of(&s.revenue, ""),
        &[],
    )?;
    line_chart(
        &figs.join("fig2b_utility_gain.png"),
        "Total advertiser utility gain",
        "utility gain",
        &series_of(&s.utility_gain, ""),
        &[],
    )?;
    let mut corr = series_of(&s.pearson_offset, ", with offset");
    let mut no = series_of(&s.pearson_no_offset, ", no offset");
    for (k, c) in no.iter_mut().enumerate() {
        c.color = colors[(k + 2) % colors.len()];
    }
    corr.append(&mut no);
    line_chart(
        &figs.join("fig3a_pearson.png"),
        "Pearson correlation of reward gain and utility gain",
        "Pearson r",
        &corr,
        &[],
    )?;
    for g in &gens {
        for (offset, tag, name) in [
            (true, "offset", "with offset"),
            (false, "no_offset", "without offset"),
        ] {
            let pts: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| r.generator == *g && r.m > 4)
                .map(|r| {
                    (
                        r.reward_gain,
                        if offset {
                            r.utility_gain
                        } else {
                            r.utility_gain_no_offset
                        },
                    )
                })
                .collect();
            let pts = trim(&pts, 0.005);
            let g_name = generator_name(*g);
            let file = figs.join(format!("scatter_{g_name}_{tag}.png"));
            if let Some(fit) = scatter_chart(&file, &format!("{}, {name}, M > 4", label(*g)), &pts)?
            {
                s.fits.insert(format!("{g_name}/{tag}"), fit);
            }
        }
    }
    let text = serde_json::to_string_pretty(&s)?;
    llm_auction_model::atomic_file::write_atomic(&dir.join("summary.json"), text.as_bytes())?;
    Ok(s)
}
