//! The models behind an auction's roles: one session per distinct model (roles that share a model
//! share its session, and so its batches and prefix cache), errors that name the roles and the
//! model, and the record of which model served each role.

use crate::error::{EngineError, Result};
use crate::lm::{LanguageModel, ModelSession, SessionCounters};
use serde::Serialize;

/// Which model served a role, as the report records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoleModel {
    /// The role (`reference`, `generator`, `advertiser <name>`, `agent <name>`).
    pub role: String,
    /// The models-file entry.
    pub entry: String,
    /// `local`, `vllm` or `llama-server`.
    pub kind: String,
    /// The file, folder or URLs behind it.
    pub location: String,
}

/// The sessions of one auction.
pub struct Sessions<'a> {
    models: Vec<&'a dyn LanguageModel>,
    sessions: Vec<Box<dyn ModelSession + 'a>>,
    /// Role names served by each session.
    served: Vec<Vec<String>>,
    /// Per role: its name and its session.
    roles: Vec<(String, usize)>,
}

impl<'a> Sessions<'a> {
    /// Opens one session per distinct model (models are the same when their entry names are).
    ///
    /// # Errors
    /// A model that cannot open a session, wrapped in [`EngineError::Role`].
    pub fn open(roles: &[(String, &'a dyn LanguageModel)]) -> Result<Self> {
        let mut s = Sessions {
            models: vec![],
            sessions: vec![],
            served: vec![],
            roles: vec![],
        };
        for (role, model) in roles {
            let name = &model.info().name;
            let idx = match s.models.iter().position(|m| &m.info().name == name) {
                Some(i) => i,
                None => {
                    let session = model.session().map_err(|e| EngineError::Role {
                        roles: role.clone(),
                        entry: name.clone(),
                        error: Box::new(e),
                    })?;
                    s.models.push(*model);
                    s.sessions.push(session);
                    s.served.push(vec![]);
                    s.models.len() - 1
                }
            };
            s.served[idx].push(role.clone());
            s.roles.push((role.clone(), idx));
        }
        Ok(s)
    }

    /// The session index of role `role` (in the order given to [`Sessions::open`]).
    pub fn of(&self, role: usize) -> usize {
        self.roles[role].1
    }

    /// Distinct models.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether there are no sessions.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Session `s`.
    pub fn get(&mut self, s: usize) -> &mut dyn ModelSession {
        self.sessions[s].as_mut()
    }

    /// The model of session `s`.
    pub fn model(&self, s: usize) -> &'a dyn LanguageModel {
        self.models[s]
    }

    /// `e` as an error of session `s`'s roles and model.
    pub fn wrap(&self, s: usize, e: EngineError) -> EngineError {
        match e {
            // Input errors are about the auction, not the model.
            e @ (EngineError::Auction { .. } | EngineError::PromptTooLong { .. }) => e,
            e => EngineError::Role {
                roles: self.served[s].join(", "),
                entry: self.models[s].info().name.clone(),
                error: Box::new(e),
            },
        }
    }

    /// [`Sessions::wrap`] for session `s`, as a closure for `map_err`.
    pub fn err(&self, s: usize) -> impl Fn(EngineError) -> EngineError + '_ {
        move |e| self.wrap(s, e)
    }

    /// The counters of all sessions, summed.
    pub fn counters(&self) -> SessionCounters {
        let mut c = SessionCounters::default();
        for s in &self.sessions {
            c += s.counters();
        }
        c
    }

    /// Which model served each role.
    pub fn role_models(&self) -> Vec<RoleModel> {
        self.roles
            .iter()
            .map(|(role, s)| {
                let info = self.models[*s].info();
                RoleModel {
                    role: role.clone(),
                    entry: info.name.clone(),
                    kind: info.kind.clone(),
                    location: info.location.clone(),
                }
            })
            .collect()
    }
}
