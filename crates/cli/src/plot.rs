//! `llm-auction experiment plot DIR`: the analogues of the MOSAIC paper's figures from
//! `DIR/results.csv`, as PNG files in `DIR/figures/`, and `DIR/summary.json` / a markdown summary on
//! stdout with the numbers the paper reports.
//!
//! Every curve is a mean over instances with a 95 % confidence interval (mean ± 1.96 standard errors);
//! Pearson correlations carry a Fisher-z 95 % interval. Per-instance quantities (log-probability,
//! revenue, totals over advertisers) are taken once per instance; reward and utility gains are per
//! (instance, advertiser) in the correlation and scatter plots, as in the paper.

use anyhow::{Context, Result};
use llm_auction_engine::experiment::{Row, read_rows};
use llm_auction_mechanism::metrics::{least_squares, pearson};
use plotters::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Mean with a 95 % confidence interval.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Ci {
    /// Mean.
    pub mean: f64,
    /// Lower bound.
    pub lo: f64,
    /// Upper bound.
    pub hi: f64,
    /// Observations.
    pub n: usize,
}

/// Mean ± 1.96 standard errors.
pub fn mean_ci(xs: &[f64]) -> Ci {
    let n = xs.len();
    if n == 0 {
        return Ci {
            mean: f64::NAN,
            lo: f64::NAN,
            hi: f64::NAN,
            n,
        };
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    let var = if n > 1 {
        xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64
    } else {
        0.0
    };
    let half = 1.96 * (var / n as f64).sqrt();
    Ci {
        mean,
        lo: mean - half,
        hi: mean + half,
        n,
    }
}

/// Pearson correlation with a Fisher-z 95 % interval (`None` for fewer than 4 points or no variance).
pub fn pearson_ci(x: &[f64], y: &[f64]) -> Option<Ci> {
    let r = pearson(x, y).ok().flatten()?;
    let n = x.len();
    if n < 4 {
        return None;
    }
    let z = r.clamp(-0.999_999, 0.999_999).atanh();
    let half = 1.96 / ((n - 3) as f64).sqrt();
    Some(Ci {
        mean: r,
        lo: (z - half).tanh(),
        hi: (z + half).tanh(),
        n,
    })
}

/// Drops points whose x or y is in the top or bottom `q` quantile (the paper trims 0.5 %).
pub fn trim(points: &[(f64, f64)], q: f64) -> Vec<(f64, f64)> {
    let quant = |v: &mut Vec<f64>, p: f64| {
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * p).round() as usize]
    };
    if points.len() < 20 {
        return points.to_vec();
    }
    let (mut xs, mut ys): (Vec<f64>, Vec<f64>) = points.iter().copied().unzip();
    let (xl, xh) = (quant(&mut xs, q), quant(&mut xs, 1.0 - q));
    let (yl, yh) = (quant(&mut ys, q), quant(&mut ys, 1.0 - q));
    points
        .iter()
        .copied()
        .filter(|&(x, y)| x >= xl && x <= xh && y >= yl && y <= yh)
        .collect()
}

/// One curve: `(M, Ci)` points.
struct Series {
    name: String,
    color: RGBColor,
    points: Vec<(f64, Ci)>,
}

fn line_chart(
    path: &Path,
    title: &str,
    y_label: &str,
    series: &[Series],
    hlines: &[(&str, f64, RGBColor)],
) -> Result<()> {
    let root = BitMapBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let xs: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect();
    let mut ys: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().flat_map(|p| [p.1.lo, p.1.hi]))
        .filter(|v| v.is_finite())
        .collect();
    ys.extend(hlines.iter().map(|h| h.1).filter(|v| v.is_finite()));
    let (x0, x1) = (
        xs.iter().copied().fold(f64::INFINITY, f64::min),
        xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    );
    let (mut y0, mut y1) = (
        ys.iter().copied().fold(f64::INFINITY, f64::min),
        ys.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    );
    if !(y0.is_finite() && y1.is_finite()) {
        (y0, y1) = (0.0, 1.0);
    }
    let pad = ((y1 - y0) * 0.08).max(1e-6);
    // Ticks at the grid's M values only (a log axis would otherwise label 1..10 and skip 16).
    let mut ticks = xs.clone();
    ticks.sort_by(f64::total_cmp);
    ticks.dedup();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (x0 * 0.85..x1 * 1.15).log_scale().with_key_points(ticks),
            (y0 - pad)..(y1 + pad),
        )?;
    chart
        .configure_mesh()
        .x_desc("number of candidates M (log scale)")
        .y_desc(y_label)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()?;
    for s in series {
        let color = s.color;
        chart
            .draw_series(LineSeries::new(
                s.points.iter().map(|p| (p.0, p.1.mean)),
                color.stroke_width(2),
            ))?
            .label(s.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(
            s.points
                .iter()
                .map(|p| Circle::new((p.0, p.1.mean), 4, color.filled())),
        )?;
        chart.draw_series(s.points.iter().filter(|p| p.1.lo.is_finite()).map(|p| {
            PathElement::new(vec![(p.0, p.1.lo), (p.0, p.1.hi)], color.stroke_width(2))
        }))?;
    }
    for &(name, h, color) in hlines.iter().filter(|h| h.1.is_finite()) {
        chart
            .draw_series(LineSeries::new(
                vec![(x0 * 0.85, h), (x1 * 1.15, h)],
                color.stroke_width(1),
            ))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()?;
    Ok(())
}

fn scatter_chart(
    path: &Path,
    title: &str,
    points: &[(f64, f64)],
) -> Result<Option<(f64, f64, f64, usize)>> {
    let root = BitMapBackend::new(path, (800, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let fit = if points.len() >= 3 {
        let (x, y): (Vec<f64>, Vec<f64>) = points.iter().copied().unzip();
        least_squares(&x, &y).ok()
    } else {
        None
    };
    let (xs, ys): (Vec<f64>, Vec<f64>) = points.iter().copied().unzip();
    let lim = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if lo.is_finite() && hi > lo {
            (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
        } else {
            (-1.0, 1.0)
        }
    };
    let (xr, yr) = (lim(&xs), lim(&ys));
    let caption = match fit {
        Some(f) => format!(
            "{title}: slope {:.2}, R² {:.2}, n = {}",
            f.slope,
            f.r2,
            points.len()
        ),
        None => format!("{title}: n = {}", points.len()),
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(xr.0..xr.1, yr.0..yr.1)?;
    chart
        .configure_mesh()
        .x_desc("reward gain")
        .y_desc("utility gain")
        .draw()?;
    chart.draw_series(
        points
            .iter()
            .map(|&(x, y)| Circle::new((x, y), 3, BLUE.mix(0.5).filled())),
    )?;
    if let Some(f) = fit {
        chart.draw_series(LineSeries::new(
            vec![
                (xr.0, f.intercept + f.slope * xr.0),
                (xr.1, f.intercept + f.slope * xr.1),
            ],
            RED.stroke_width(2),
        ))?;
    }
    root.present()?;
    Ok(fit.map(|f| (f.slope, f.intercept, f.r2, points.len())))
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
    /// Least-squares fits `(slope, intercept, R², n)` for M > 4: `generator/offset|no_offset`.
    pub fits: BTreeMap<String, (f64, f64, f64, usize)>,
    /// Share of returned replies mentioning the advertiser, per generator and M.
    pub mention_rate: BTreeMap<String, BTreeMap<usize, Ci>>,
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
    type Key = (String, usize);
    let mut by_gm: BTreeMap<Key, BTreeMap<(u32, u64), Vec<&Row>>> = BTreeMap::new();
    for r in &rows {
        by_gm
            .entry((r.generator.clone(), r.m))
            .or_default()
            .entry((r.query_id, r.seed))
            .or_default()
            .push(r);
    }
    let mut s = Summary::default();
    let gens: Vec<String> = {
        let mut g: Vec<String> = by_gm.keys().map(|k| k.0.clone()).collect();
        g.dedup();
        g
    };
    for ((g, m), insts) in &by_gm {
        let per_inst =
            |f: &dyn Fn(&[&Row]) -> f64| -> Vec<f64> { insts.values().map(|rs| f(rs)).collect() };
        s.instances.insert(g.clone(), insts.len());
        s.logprob_opt
            .entry(g.clone())
            .or_default()
            .insert(*m, mean_ci(&per_inst(&|rs| rs[0].logprob_opt_reply)));
        s.expected_logprob_opt
            .entry(g.clone())
            .or_default()
            .insert(*m, mean_ci(&per_inst(&|rs| rs[0].expected_logprob_opt)));
        s.reward_gain.entry(g.clone()).or_default().insert(
            *m,
            mean_ci(&per_inst(&|rs| rs.iter().map(|r| r.reward_gain).sum())),
        );
        s.revenue
            .entry(g.clone())
            .or_default()
            .insert(*m, mean_ci(&per_inst(&|rs| rs[0].revenue)));
        s.utility_gain.entry(g.clone()).or_default().insert(
            *m,
            mean_ci(&per_inst(&|rs| rs.iter().map(|r| r.utility_gain).sum())),
        );
        let obs: Vec<&Row> = insts.values().flatten().copied().collect();
        let rg: Vec<f64> = obs.iter().map(|r| r.reward_gain).collect();
        let ug: Vec<f64> = obs.iter().map(|r| r.utility_gain).collect();
        let ugn: Vec<f64> = obs.iter().map(|r| r.utility_gain_no_offset).collect();
        if let Some(c) = pearson_ci(&rg, &ug) {
            s.pearson_offset.entry(g.clone()).or_default().insert(*m, c);
        }
        if let Some(c) = pearson_ci(&rg, &ugn) {
            s.pearson_no_offset
                .entry(g.clone())
                .or_default()
                .insert(*m, c);
        }
        let mentions: Vec<f64> = obs
            .iter()
            .map(|r| f64::from(u8::from(r.mentioned)))
            .collect();
        s.mention_rate
            .entry(g.clone())
            .or_default()
            .insert(*m, mean_ci(&mentions));
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
    let label = |g: &str| {
        if g == "context" {
            "context-aware".to_string()
        } else {
            "reference (baseline)".to_string()
        }
    };
    let series_of = |m: &BTreeMap<String, BTreeMap<usize, Ci>>, suffix: &str| -> Vec<Series> {
        m.iter()
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
                .filter(|r| &r.generator == g && r.m > 4)
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
            let file = figs.join(format!("scatter_{g}_{tag}.png"));
            if let Some(fit) = scatter_chart(&file, &format!("{}, {name}, M > 4", label(g)), &pts)?
            {
                s.fits.insert(format!("{g}/{tag}"), fit);
            }
        }
    }
    let text = serde_json::to_string_pretty(&s)?;
    llm_auction_engine::experiment::write_atomic(&dir.join("summary.json"), text.as_bytes())?;
    Ok(s)
}

/// A markdown rendering of the summary (the tables of `docs/results.md`).
pub fn markdown(s: &Summary) -> String {
    let mut out = String::new();
    let fmt = |c: &Ci| format!("{:.2} [{:.2}, {:.2}]", c.mean, c.lo, c.hi);
    let table = |title: &str, m: &BTreeMap<String, BTreeMap<usize, Ci>>| -> String {
        let ms: Vec<usize> = {
            let mut v: Vec<usize> = m.values().flat_map(|x| x.keys().copied()).collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        let mut t = format!(
            "**{title}** (mean [95 % CI])\n\n| generator | {} |\n| --- |{}\n",
            ms.iter()
                .map(|m| format!("M = {m}"))
                .collect::<Vec<_>>()
                .join(" | "),
            " --- |".repeat(ms.len())
        );
        for (g, pts) in m {
            t.push_str(&format!(
                "| {g} | {} |\n",
                ms.iter()
                    .map(|m| pts.get(m).map(fmt).unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join(" | ")
            ));
        }
        t + "\n"
    };
    out.push_str(&format!("Instances per generator: {:?}\n\n", s.instances));
    out.push_str(&table("log π_r of the returned reply", &s.logprob_opt));
    out.push_str(&table(
        "expected log π_r over the allocation",
        &s.expected_logprob_opt,
    ));
    if let Some(p) = s.ref_proxy {
        out.push_str(&format!(
            "Proxy π̂_opt for sampling from the optimum (footnote 8: tempered π_ref samples under π_ref): {}\n\n",
            fmt(&p)
        ));
    }
    if let Some(p) = s.opt_proxy {
        out.push_str(&format!(
            "E_π_r[log π_r] from untempered reference samples, self-normalised: {}\n\n",
            fmt(&p)
        ));
    }
    out.push_str(&table("total reward gain", &s.reward_gain));
    out.push_str(&table("revenue (total payments)", &s.revenue));
    out.push_str(&table("total utility gain", &s.utility_gain));
    out.push_str(&table(
        "Pearson(reward gain, utility gain), with offset",
        &s.pearson_offset,
    ));
    out.push_str(&table(
        "Pearson(reward gain, utility gain), without offset",
        &s.pearson_no_offset,
    ));
    out.push_str(&table(
        "share of returned replies mentioning the advertiser",
        &s.mention_rate,
    ));
    out.push_str("**Least-squares fits, M > 4, 0.5 % trimmed** (slope, R², n)\n\n| fit | slope | R² | n |\n| --- | --- | --- | --- |\n");
    for (k, (slope, _, r2, n)) in &s.fits {
        out.push_str(&format!("| {k} | {slope:.2} | {r2:.2} | {n} |\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_on_hand_computed_cases() {
        let c = mean_ci(&[1.0, 2.0, 3.0, 4.0]);
        // sd = sqrt(5/3); half width = 1.96 · sd / 2.
        assert!((c.mean - 2.5).abs() < 1e-12);
        assert!((c.hi - c.mean - 1.96 * (5.0f64 / 3.0).sqrt() / 2.0).abs() < 1e-12);
        let p = pearson_ci(&[1.0, 2.0, 3.0, 4.0, 5.0], &[2.0, 4.0, 6.0, 8.0, 10.5]).unwrap();
        assert!(p.mean > 0.99 && p.lo < p.mean && p.hi <= 1.0);
        let pts: Vec<(f64, f64)> = (0..1000).map(|i| (i as f64, i as f64)).collect();
        let t = trim(&pts, 0.005);
        assert_eq!(t.len(), 1000 - 2 * 5);
    }
}
