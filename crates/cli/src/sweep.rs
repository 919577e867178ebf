//! The token auction's two-advertiser λ sweep as both commands run and print it
//! (`token-auction --lambda-sweep K` and `experiment token-sweep`): one progress bar, one table.

use crate::common::bar;
use anyhow::Result;
use llm_auction_engine::token_auction::{Agent, AgentModels, SweepConfig, SweepRow, lambda_sweep};
use llm_auction_mechanism::aggregate::Aggregation;

/// The sweep's rows per aggregation.
pub type Sweep = Vec<(Aggregation, Vec<SweepRow>)>;

/// Runs the sweep with a progress bar on stderr (none when `quiet`).
///
/// # Errors
/// As [`lambda_sweep`].
pub fn run(
    models: &AgentModels<'_>,
    query: &str,
    agents: &[Agent],
    cfg: SweepConfig,
    quiet: bool,
) -> Result<Sweep> {
    let pb = bar(1, "sweeping", quiet);
    let rows = lambda_sweep(models, query, agents, cfg, &mut |d, t| {
        pb.set_length(t as u64);
        pb.set_position(d as u64);
    })?;
    pb.finish_and_clear();
    Ok(rows)
}

/// One markdown table per aggregation: λ, each agent's total payment, the tokens the first agent
/// won (`—` where no step has a winner) and the text.
pub fn tables(agents: &[Agent], sweep: &Sweep) -> String {
    let mut md = String::new();
    for (agg, rows) in sweep {
        md.push_str(&format!(
            "## {agg:?} aggregation\n\n| λ | paid by {} | paid by {} | tokens from {} | text |\n| --- | --- | --- | --- | --- |\n",
            agents[0].name, agents[1].name, agents[0].name
        ));
        for r in rows {
            let steps = &r.report.steps;
            let won = if steps.iter().any(|s| s.winner.is_some()) {
                let first = steps.iter().filter(|s| s.winner == Some(0)).count();
                format!("{first}/{}", steps.len())
            } else {
                "—".into()
            };
            let text = r.report.text.trim().replace('\n', " ").replace('|', "\\|");
            md.push_str(&format!(
                "| {:.2} | {:.3} | {:.3} | {won} | {text} |\n",
                r.lambda, r.report.total_payments[0], r.report.total_payments[1]
            ));
        }
        md.push('\n');
    }
    md
}
