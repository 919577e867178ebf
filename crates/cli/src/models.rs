//! Which model serves each role: `--models FILE` (a TOML models file, see docs/remote.md) and the
//! role flags (`--reference`, `--generator-model`, `--advertiser-model`, `--agent-model`). Without
//! them every role is on the default local model (or `--model PATH`), as before models files
//! existed.

use crate::common::{ModelArgs, load_model};
use anyhow::{Context, Result, bail};
use clap::Args;
use llm_auction_engine::engine::EngineConfig;
use llm_auction_engine::lm::LanguageModel;
use llm_auction_engine::lm::local::EngineModel;
use llm_auction_engine::lm::served::ServedModel;
use llm_auction_engine::models_file::{DEFAULT_ENTRY, EntrySpec, ModelsFile};
use llm_auction_engine::remote::RemoteModel;
use llm_auction_model::backend::KvBackend;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// `--models FILE`.
#[derive(Debug, Clone, Args)]
pub struct ModelsArgs {
    /// A models file (TOML) with local and remote (vLLM, llama-server) entries for the roles; see
    /// docs/remote.md. The entry "default" is the default local model unless the file defines it.
    #[arg(long = "models", value_name = "FILE")]
    pub file: Option<PathBuf>,
}

/// How local models run their sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serving {
    /// Each session (one auction) owns an engine: the CLI's one-shot commands.
    PerSession,
    /// One engine thread per model shared by every session: the HTTP service.
    Shared,
}

/// The entries the roles use, instantiated once each.
pub struct Registry {
    models: BTreeMap<String, Arc<dyn LanguageModel>>,
    served: Vec<Arc<ServedModel>>,
}

impl Registry {
    /// Loads (local) or connects to and probes (remote) the entry of every `(role, entry)`; each
    /// local model's sessions own their engine.
    ///
    /// # Errors
    /// A bad models file, an unknown entry, a model that does not load, a server that does not
    /// answer its probe (naming the roles and the entry).
    pub fn build<B: KvBackend>(
        file: &ModelsArgs,
        roles: &[(String, String)],
        model: &ModelArgs,
        engine: EngineConfig,
        device: &B::Device,
        quiet: bool,
    ) -> Result<Self>
    where
        llm_auction_model::model::Model<B>: Send + Sync,
    {
        Self::build_with::<B>(
            file,
            roles,
            model,
            engine,
            device,
            quiet,
            Serving::PerSession,
        )
    }

    /// As [`Registry::build`], with local models served as `serving` says.
    ///
    /// # Errors
    /// As [`Registry::build`], and an engine thread that does not start.
    #[allow(clippy::too_many_arguments)]
    pub fn build_with<B: KvBackend>(
        file: &ModelsArgs,
        roles: &[(String, String)],
        model: &ModelArgs,
        engine: EngineConfig,
        device: &B::Device,
        quiet: bool,
        serving: Serving,
    ) -> Result<Self>
    where
        llm_auction_model::model::Model<B>: Send + Sync,
    {
        let parsed = match &file.file {
            Some(p) => Some(ModelsFile::load(p)?),
            None => None,
        };
        // Every name is resolved before anything loads, so a bad name fails at once.
        let mut specs: Vec<EntrySpec> = Vec::new();
        for (_, name) in roles {
            if specs.iter().any(|s| spec_name(s) == name) {
                continue;
            }
            specs.push(match parsed.as_ref().map(|f| f.entry(name)) {
                Some(Ok(spec)) => spec.clone(),
                _ if name == DEFAULT_ENTRY => EntrySpec::Local {
                    name: DEFAULT_ENTRY.into(),
                    path: None,
                },
                Some(Err(e)) => return Err(e.into()),
                None => bail!("model {name:?}: no models file given (--models FILE)"),
            });
        }
        let mut models: BTreeMap<String, Arc<dyn LanguageModel>> = BTreeMap::new();
        let mut shared = Vec::new();
        for spec in specs {
            let name = spec_name(&spec).to_string();
            let served: Vec<&str> = roles
                .iter()
                .filter(|(_, e)| *e == name)
                .map(|(r, _)| r.as_str())
                .collect();
            let served = served.join(", ");
            let lm: Arc<dyn LanguageModel> = match spec {
                EntrySpec::Local { name, path } => {
                    // The default entry honours --model PATH; other local entries name their own.
                    let args = ModelArgs {
                        model: path.or_else(|| model.model.clone()),
                        device: model.device,
                        kernels: model.kernels,
                    };
                    let loaded = Arc::new(
                        load_model::<B>(&args, device, quiet)
                            .with_context(|| format!("{served} (model {name})"))?,
                    );
                    match serving {
                        Serving::PerSession => Arc::new(EngineModel::new(&name, loaded, engine)),
                        Serving::Shared => {
                            let m = Arc::new(
                                ServedModel::start(&name, loaded, engine)
                                    .with_context(|| format!("{served} (model {name})"))?,
                            );
                            shared.push(m.clone());
                            m
                        }
                    }
                }
                EntrySpec::Remote(spec) => Arc::new(
                    RemoteModel::connect(spec)
                        .with_context(|| format!("{served} (model {name})"))?,
                ),
            };
            models.insert(lm.info().name.clone(), lm);
        }
        Ok(Self {
            models,
            served: shared,
        })
    }

    /// Every entry, by name.
    pub fn models(&self) -> impl Iterator<Item = &dyn LanguageModel> {
        self.models.values().map(|m| m.as_ref())
    }

    /// The shared engines (with [`Serving::Shared`]), for their live figures.
    pub fn served(&self) -> &[Arc<ServedModel>] {
        &self.served
    }

    /// The model of entry `name` (one of the entries given to [`Registry::build`]).
    pub fn get(&self, name: &str) -> Result<&dyn LanguageModel> {
        self.models
            .get(name)
            .map(|m| m.as_ref())
            .with_context(|| format!("model {name:?} was not loaded"))
    }
}

fn spec_name(s: &EntrySpec) -> &str {
    match s {
        EntrySpec::Local { name, .. } => name,
        EntrySpec::Remote(r) => &r.name,
    }
}

/// `(role, entry)` pairs: `prefix name` for each of `names` with its entry.
pub fn roles_of(prefix: &str, names: &[&str], entries: &[String]) -> Vec<(String, String)> {
    names
        .iter()
        .zip(entries)
        .map(|(n, e)| (format!("{prefix} {n}"), e.clone()))
        .collect()
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
