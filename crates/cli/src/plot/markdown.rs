//! The summary as markdown (the tables of `docs/results.md`).

use super::Summary;
use super::stats::Ci;
use std::collections::BTreeMap;

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
    for (k, f) in &s.fits {
        out.push_str(&format!(
            "| {k} | {:.2} | {:.2} | {} |\n",
            f.fit.slope, f.fit.r2, f.n
        ));
    }
    out
}
