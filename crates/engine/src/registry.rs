//! Which model serves each role: the entries of a models file (docs/remote.md), loaded (local) or
//! connected to and probed (remote) once each, and looked up by name. Without a models file every
//! role is on the entry `default`, the default local model. The CLI, the HTTP service and the
//! Python package all resolve their roles here.

use crate::engine::EngineConfig;
use crate::error::{EngineError, Result};
use crate::lm::LanguageModel;
use crate::lm::local::EngineModel;
use crate::lm::served::ServedModel;
use crate::models_file::{DEFAULT_ENTRY, EntrySpec, ModelsFile};
use crate::remote::RemoteModel;
use llm_auction_model::backend::ModelBackend;
use llm_auction_model::model::Model;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How local models run their sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serving {
    /// Each session (one auction) owns an engine: one-shot commands and notebooks.
    PerSession,
    /// One engine thread per model shared by every session: the HTTP service.
    Shared,
}

/// Loads a local entry's model: its name and its path (`None`: the default model, or whatever the
/// caller's own default is). The error is one line, shown after the roles and the entry.
pub type LoadLocal<'a, B> =
    dyn FnMut(&str, Option<PathBuf>) -> std::result::Result<Model<B>, String> + 'a;

/// The entries the roles use, each instantiated once.
pub struct Registry {
    file: Option<ModelsFile>,
    engine: EngineConfig,
    serving: Serving,
    models: BTreeMap<String, Arc<dyn LanguageModel>>,
    served: Vec<Arc<ServedModel>>,
}

/// `(role, entry)` pairs: `"{prefix} {name}"` for each of `names` with its entry.
pub fn roles_of(prefix: &str, names: &[&str], entries: &[String]) -> Vec<(String, String)> {
    names
        .iter()
        .zip(entries)
        .map(|(n, e)| (format!("{prefix} {n}"), e.clone()))
        .collect()
}

impl Registry {
    /// An empty registry over the models file `file` (if any); local models run their sessions
    /// with `engine` as `serving` says.
    ///
    /// # Errors
    /// A models file that does not read or validate ([`EngineError::ModelsFile`]).
    pub fn new(file: Option<&Path>, engine: EngineConfig, serving: Serving) -> Result<Self> {
        Ok(Self {
            file: file.map(ModelsFile::load).transpose()?,
            engine,
            serving,
            models: BTreeMap::new(),
            served: Vec::new(),
        })
    }

    /// Instantiates every entry that `roles` (`(role, entry)` pairs) name and that is not here yet:
    /// local entries through `load`, remote ones by connecting and probing. Every name is resolved
    /// before anything loads, so a bad name fails at once.
    ///
    /// # Errors
    /// An unknown entry (or any entry but `default` without a models file); a model that does not
    /// load, a server that does not answer its probe, an engine thread that does not start, each
    /// as [`EngineError::Role`] naming the roles and the entry.
    pub fn ensure<B: ModelBackend>(
        &mut self,
        roles: &[(String, String)],
        load: &mut LoadLocal<'_, B>,
    ) -> Result<()>
    where
        Model<B>: Send + Sync,
    {
        let mut specs: Vec<EntrySpec> = Vec::new();
        for (_, name) in roles {
            if self.models.contains_key(name) || specs.iter().any(|s| spec_name(s) == name) {
                continue;
            }
            specs.push(match self.file.as_ref().map(|f| f.entry(name)) {
                Some(Ok(spec)) => spec.clone(),
                _ if name == DEFAULT_ENTRY => EntrySpec::Local {
                    name: DEFAULT_ENTRY.into(),
                    path: None,
                },
                Some(Err(e)) => return Err(e),
                None => {
                    return Err(EngineError::Entry {
                        name: name.clone(),
                        message: format!("no models file given, so only {DEFAULT_ENTRY:?} exists"),
                    });
                }
            });
        }
        for spec in specs {
            let name = spec_name(&spec).to_string();
            let served: Vec<&str> = roles
                .iter()
                .filter(|(_, e)| *e == name)
                .map(|(r, _)| r.as_str())
                .collect();
            let role_err = |error: EngineError| EngineError::Role {
                roles: served.join(", "),
                entry: name.clone(),
                error: Box::new(error),
            };
            let lm: Arc<dyn LanguageModel> = match spec {
                EntrySpec::Local { name, path } => {
                    let loaded = Arc::new(load(&name, path).map_err(|message| {
                        role_err(EngineError::Backend {
                            model: name.clone(),
                            message,
                        })
                    })?);
                    match self.serving {
                        Serving::PerSession => {
                            Arc::new(EngineModel::new(&name, loaded, self.engine))
                        }
                        Serving::Shared => {
                            let m = Arc::new(
                                ServedModel::start(&name, loaded, self.engine).map_err(role_err)?,
                            );
                            self.served.push(m.clone());
                            m
                        }
                    }
                }
                EntrySpec::Remote(spec) => Arc::new(RemoteModel::connect(spec).map_err(role_err)?),
            };
            self.models.insert(lm.info().name.clone(), lm);
        }
        Ok(())
    }

    /// Every entry instantiated so far, by name.
    pub fn models(&self) -> impl Iterator<Item = &dyn LanguageModel> {
        self.models.values().map(|m| m.as_ref())
    }

    /// The shared engines (with [`Serving::Shared`]), for their live figures.
    pub fn served(&self) -> &[Arc<ServedModel>] {
        &self.served
    }

    /// The model of entry `name` (one that [`Registry::ensure`] instantiated).
    ///
    /// # Errors
    /// [`EngineError::Entry`] when `name` was not instantiated.
    pub fn get(&self, name: &str) -> Result<&dyn LanguageModel> {
        self.models
            .get(name)
            .map(|m| m.as_ref())
            .ok_or_else(|| EngineError::Entry {
                name: name.into(),
                message: "was not loaded".into(),
            })
    }
}

fn spec_name(s: &EntrySpec) -> &str {
    match s {
        EntrySpec::Local { name, .. } => name,
        EntrySpec::Remote(r) => &r.name,
    }
}
