//! The options of one auction as a caller gives them — the JSON body of `POST /v1/mosaic` and
//! `POST /v1/token-auction`, the keyword arguments of Python's `Auction.mosaic` / `Auction.token` —
//! checked once into the auctions' configs with their defaults ([`MosaicConfig::default`],
//! [`TokenAuctionConfig::default`]) and one models-file entry per role.
//!
//! Field names are the CLI's options in snake case; every error names its field
//! (`advertisers[1]`, `advertiser_models.Acme`, `tau`).

use crate::error::{EngineError, Result};
use crate::models_file::DEFAULT_ENTRY;
use crate::mosaic::{Advertiser, Generator, Importance, MosaicConfig, check_input};
use crate::token_auction::{Agent, TokenAuctionConfig};
use llm_auction_mechanism::aggregate::Aggregation;
use llm_auction_mechanism::token_auction::PaymentRule;
use serde::Deserialize;
use std::collections::BTreeMap;

/// An advertiser: `{"name", "description"}` or `"Name: description"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum AdvertiserInput {
    /// Name and description apart.
    Object {
        /// Brand name.
        name: String,
        /// What it does.
        description: String,
    },
    /// `"Name: description"`.
    Text(String),
}

/// A MOSAIC request: the options of `llm-auction mosaic`; absent ones take their defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MosaicInput {
    /// The user's query.
    pub query: String,
    /// The advertisers.
    pub advertisers: Vec<AdvertiserInput>,
    /// Candidates `M`.
    pub m: Option<usize>,
    /// The platform's `τ`.
    pub tau: Option<f64>,
    /// Per-advertiser `τ_i`.
    pub tau_i: Option<Vec<f64>>,
    /// Sampling temperature of the candidates.
    pub temperature: Option<f64>,
    /// Nucleus mass.
    pub top_p: Option<f64>,
    /// Most tokens per candidate.
    pub max_new_tokens: Option<usize>,
    /// Seed of the candidates and of the draw.
    pub seed: Option<u64>,
    /// Candidate generator.
    pub generator: Option<Generator>,
    /// Importance-weight convention.
    pub importance: Option<Importance>,
    /// The agent-specific offset of Eq. 13.
    pub offset: Option<bool>,
    /// Models-file entry of the reference LLM.
    pub reference: Option<String>,
    /// Models-file entry of the generator.
    pub generator_model: Option<String>,
    /// `{advertiser name: models-file entry}`.
    #[serde(default)]
    pub advertiser_models: BTreeMap<String, String>,
}

/// A checked MOSAIC request.
#[derive(Debug, Clone, PartialEq)]
pub struct MosaicJob {
    /// The user's query.
    pub query: String,
    /// The advertisers, parsed.
    pub ads: Vec<Advertiser>,
    /// The configuration, defaults filled in.
    pub cfg: MosaicConfig,
    /// Entry of the reference LLM.
    pub reference: String,
    /// Entry of the generator.
    pub generator: String,
    /// Entry of each advertiser's LLM, in the advertisers' order.
    pub advertisers: Vec<String>,
}

/// Parses each item with `f`; an error names `field[i]`. At most `max` items.
fn parse_items<T, U>(
    field: &str,
    items: Vec<T>,
    max: usize,
    f: impl Fn(T) -> Result<U>,
) -> Result<Vec<U>> {
    crate::limits::check(field, items.len(), max)?;
    items
        .into_iter()
        .enumerate()
        .map(|(i, x)| {
            f(x).map_err(|e| EngineError::InField {
                field: format!("{field}[{i}]"),
                error: Box::new(e),
            })
        })
        .collect()
}

/// One entry per name from a `{"Name": "entry"}` map (absent: the default entry); a key that
/// names nobody is an error naming `field.key`.
pub fn entries_per_name(
    field: &str,
    map: &BTreeMap<String, String>,
    names: &[&str],
) -> Result<Vec<String>> {
    if let Some(unknown) = map.keys().find(|k| !names.contains(&k.as_str())) {
        return Err(EngineError::Auction {
            field: format!("{field}.{unknown}"),
            message: format!("no such name among {names:?}"),
        });
    }
    Ok(names
        .iter()
        .map(|n| map.get(*n).cloned().unwrap_or_else(|| DEFAULT_ENTRY.into()))
        .collect())
}

impl MosaicInput {
    /// Parses the advertisers (at most `max_advertisers`), fills in the defaults and checks the
    /// whole as [`check_input`] does.
    ///
    /// # Errors
    /// [`EngineError::Auction`] or [`EngineError::InField`] naming the field.
    pub fn check(self, max_advertisers: usize) -> Result<MosaicJob> {
        let ads = parse_items(
            "advertisers",
            self.advertisers,
            max_advertisers,
            |a| match a {
                AdvertiserInput::Text(s) => Advertiser::parse(&s),
                AdvertiserInput::Object { name, description } => {
                    Advertiser::parse(&format!("{name}: {description}"))
                }
            },
        )?;
        let d = MosaicConfig::default();
        let cfg = MosaicConfig {
            m: self.m.unwrap_or(d.m),
            tau: self.tau.unwrap_or(d.tau),
            tau_i: self.tau_i.unwrap_or(d.tau_i),
            temperature: self.temperature.unwrap_or(d.temperature),
            top_p: self.top_p.unwrap_or(d.top_p),
            max_new_tokens: self.max_new_tokens.unwrap_or(d.max_new_tokens),
            seed: self.seed.unwrap_or(d.seed),
            generator: self.generator.unwrap_or(d.generator),
            importance: self.importance.unwrap_or(d.importance),
            offset: self.offset.unwrap_or(d.offset),
        };
        check_input(&cfg, &self.query, &ads)?;
        let names: Vec<&str> = ads.iter().map(|a| a.name.as_str()).collect();
        let advertisers = entries_per_name("advertiser_models", &self.advertiser_models, &names)?;
        Ok(MosaicJob {
            reference: self.reference.unwrap_or_else(|| DEFAULT_ENTRY.into()),
            generator: self.generator_model.unwrap_or_else(|| DEFAULT_ENTRY.into()),
            advertisers,
            query: self.query,
            ads,
            cfg,
        })
    }
}

/// A token-auction agent: `{"name", "description", "bid", "system_prompt"?}` or
/// `"Name: description: bid"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum AgentInput {
    /// The parts apart.
    Object {
        /// Brand name.
        name: String,
        /// What it does.
        description: String,
        /// Its bid.
        bid: f64,
        /// A system message replacing the default one.
        #[serde(default)]
        system_prompt: Option<String>,
    },
    /// `"Name: description: bid"`.
    Text(String),
}

/// A token-auction request: the options of `llm-auction token-auction`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenInput {
    /// The user's query.
    pub query: String,
    /// The agents.
    pub agents: Vec<AgentInput>,
    /// Aggregation rule.
    pub aggregation: Option<Aggregation>,
    /// Payment rule.
    pub payment: Option<PaymentRule>,
    /// Most tokens of the reply.
    pub max_new_tokens: Option<usize>,
    /// Seed of the stable sampler.
    pub seed: Option<u64>,
    /// `{agent name: models-file entry}`.
    #[serde(default)]
    pub agent_models: BTreeMap<String, String>,
}

/// A checked token-auction request.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenJob {
    /// The user's query.
    pub query: String,
    /// The agents, parsed.
    pub agents: Vec<Agent>,
    /// The configuration, defaults filled in.
    pub cfg: TokenAuctionConfig,
    /// Entry of each agent's LLM, in the agents' order.
    pub entries: Vec<String>,
}

impl TokenInput {
    /// Parses the agents (at most `max_agents`) and fills in the defaults.
    ///
    /// # Errors
    /// [`EngineError::Auction`] or [`EngineError::InField`] naming the field.
    pub fn check(self, max_agents: usize) -> Result<TokenJob> {
        let agents = parse_items("agents", self.agents, max_agents, |a| match a {
            AgentInput::Text(s) => Agent::parse(&s),
            AgentInput::Object {
                name,
                description,
                bid,
                system_prompt,
            } => Agent::parse(&format!("{name}: {description}: {bid}")).map(|mut a| {
                a.system_prompt = system_prompt;
                a
            }),
        })?;
        let d = TokenAuctionConfig::default();
        let cfg = TokenAuctionConfig {
            aggregation: self.aggregation.unwrap_or(d.aggregation),
            payment: self.payment.unwrap_or(d.payment),
            max_new_tokens: self.max_new_tokens.unwrap_or(d.max_new_tokens),
            seed: self.seed.unwrap_or(d.seed),
        };
        let names: Vec<&str> = agents.iter().map(|a| a.name.as_str()).collect();
        Ok(TokenJob {
            entries: entries_per_name("agent_models", &self.agent_models, &names)?,
            query: self.query,
            agents,
            cfg,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mosaic(json: &str) -> Result<MosaicJob> {
        serde_json::from_str::<MosaicInput>(json).unwrap().check(4)
    }

    #[test]
    fn absent_options_take_the_mosaic_defaults() {
        let job =
            mosaic(r#"{"query": "q", "advertisers": ["A: a", {"name": "B", "description": "b"}]}"#)
                .unwrap();
        assert_eq!(job.cfg, MosaicConfig::default());
        assert_eq!(job.ads[1].name, "B");
        assert_eq!(job.advertisers, [DEFAULT_ENTRY, DEFAULT_ENTRY]);
        assert_eq!(
            (job.reference.as_str(), job.generator.as_str()),
            (DEFAULT_ENTRY, DEFAULT_ENTRY)
        );
    }

    #[test]
    fn given_options_and_entries_are_kept() {
        let job = mosaic(
            r#"{"query": "q", "advertisers": ["A: a", "B: b"], "m": 3, "tau": 0.5,
                "generator": "reference", "importance": "raw", "offset": false,
                "reference": "big", "advertiser_models": {"B": "remote"}}"#,
        )
        .unwrap();
        assert_eq!((job.cfg.m, job.cfg.tau, job.cfg.offset), (3, 0.5, false));
        assert_eq!(job.cfg.generator, Generator::Reference);
        assert_eq!(job.cfg.importance, Importance::Raw);
        assert_eq!(job.reference, "big");
        assert_eq!(job.advertisers, [DEFAULT_ENTRY, "remote"]);
    }

    #[test]
    fn errors_name_their_field() {
        let cases = [
            (
                r#"{"query": "q", "advertisers": ["A: a", "no colon"]}"#,
                "advertisers[1]: ",
            ),
            (
                r#"{"query": "q", "advertisers": ["A: a"], "advertiser_models": {"Z": "x"}}"#,
                "advertiser_models.Z: ",
            ),
            (
                r#"{"query": "q", "advertisers": ["A: a"], "tau": 0}"#,
                "tau: ",
            ),
            (r#"{"query": " ", "advertisers": ["A: a"]}"#, "query: "),
            (
                r#"{"query": "q", "advertisers": ["A: a", "B: b", "C: c", "D: d", "E: e"]}"#,
                "advertisers: ",
            ),
        ];
        for (json, start) in cases {
            let e = mosaic(json).unwrap_err().to_string();
            assert!(e.starts_with(start), "{json}: {e}");
        }
    }

    #[test]
    fn token_input_defaults_agents_and_errors() {
        let job = serde_json::from_str::<TokenInput>(
            r#"{"query": "q", "agents": ["A: a: 1", {"name": "B", "description": "b", "bid": 2.5, "system_prompt": "Hi"}]}"#,
        )
        .unwrap()
        .check(4)
        .unwrap();
        assert_eq!(job.cfg, TokenAuctionConfig::default());
        assert_eq!(job.agents[1].bid, 2.5);
        assert_eq!(job.agents[1].system_prompt.as_deref(), Some("Hi"));
        let e = serde_json::from_str::<TokenInput>(r#"{"query": "q", "agents": ["A: a: x"]}"#)
            .unwrap()
            .check(4)
            .unwrap_err();
        assert!(e.to_string().starts_with("agents[0]: "), "{e}");
        assert!(
            serde_json::from_str::<TokenInput>(r#"{"query": "q", "agents": [], "bogus": 1}"#)
                .is_err()
        );
    }
}
