//! Which model serves each role: `--models FILE` (a TOML models file, see docs/remote.md) and the
//! role flags (`--reference`, `--generator-model`, `--advertiser-model`, `--agent-model`). Without
//! them every role is on the default local model (or `--model PATH`), as before models files
//! existed.

use crate::common::{ModelArgs, load_model};
use anyhow::{Result, bail};
use clap::Args;
use llm_auction_engine::engine::EngineConfig;
pub use llm_auction_engine::registry::{Registry, Serving, roles_of};
use llm_auction_model::backend::ModelBackend;
use std::path::PathBuf;

/// `--models FILE`.
#[derive(Debug, Clone, Args)]
pub struct ModelsArgs {
    /// A models file (TOML) with local and remote (vLLM, llama-server) entries for the roles; see
    /// docs/remote.md. The entry "default" is the default local model unless the file defines it.
    #[arg(long = "models", value_name = "FILE")]
    pub file: Option<PathBuf>,
}

/// Resolves the entry of every `(role, entry)`: local entries load as `--model` / `--kernels` say
/// (the entry `default` honours `--model PATH`; other local entries name their own path), remote
/// ones are connected to and probed.
///
/// # Errors
/// A bad models file, an unknown entry, a model that does not load, a server that does not answer
/// its probe (naming the roles and the entry), an engine thread that does not start.
pub fn build_registry<B: ModelBackend>(
    file: &ModelsArgs,
    roles: &[(String, String)],
    model: &ModelArgs,
    engine: EngineConfig,
    device: &B::Device,
    quiet: bool,
    serving: Serving,
) -> Result<Registry>
where
    llm_auction_model::model::Model<B>: Send + Sync,
{
    let mut registry = Registry::new(file.file.as_deref(), engine, serving)?;
    registry.ensure::<B>(roles, &mut |_, path| {
        let args = ModelArgs {
            model: path.or_else(|| model.model.clone()),
            device: model.device,
            kernels: model.kernels,
        };
        load_model::<B>(&args, device, quiet).map_err(|e| format!("{e:#}"))
    })?;
    Ok(registry)
}

/// Parses repeated `"Name=ENTRY"` flags into one entry per name in `names` (default: `fallback`).
///
/// # Errors
/// A flag without `=`, or naming nobody in `names`.
pub fn per_name(
    flag: &str,
    specs: &[String],
    names: &[&str],
    fallback: &str,
) -> Result<Vec<String>> {
    let mut out = vec![fallback.to_string(); names.len()];
    for s in specs {
        let Some((who, entry)) = s.rsplit_once('=') else {
            bail!("{flag}: {s:?} must look like \"Name=ENTRY\"");
        };
        let (who, entry) = (who.trim(), entry.trim());
        let Some(i) = names.iter().position(|n| *n == who) else {
            bail!(
                "{flag}: {who:?} is none of {}",
                names
                    .iter()
                    .map(|n| format!("{n:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        if entry.is_empty() {
            bail!("{flag}: {s:?} names no entry");
        }
        out[i] = entry.to_string();
    }
    Ok(out)
}
