//! Backend selection. Exactly one CPU backend is the crate's [`CpuBackend`] (flex when compiled in,
//! else ndarray); with the `cuda` feature, `CudaBackend` is available and [`DeviceChoice`] picks
//! between them at run time. The KV-cache row write is the one operation whose best implementation
//! differs per backend ([`ModelBackend`]).

use crate::batch::ForwardBatch;
use crate::error::{ModelError, Result};
use crate::kv::KvCache;
use crate::llama::Llama;
use burn::tensor::backend::Backend;
use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorData};
use std::fmt;
use std::str::FromStr;

#[cfg(not(any(feature = "flex", feature = "ndarray")))]
compile_error!("llm-auction-model needs a CPU backend: enable the `flex` or `ndarray` feature");

/// The CPU backend compiled in: flex (pure-Rust gemm) if enabled, else ndarray.
#[cfg(feature = "flex")]
pub type CpuBackend = burn_flex::Flex;
/// The CPU backend compiled in: flex (pure-Rust gemm) if enabled, else ndarray.
#[cfg(all(not(feature = "flex"), feature = "ndarray"))]
pub type CpuBackend = burn_ndarray::NdArray<f32>;

/// The flex backend (when compiled in).
#[cfg(feature = "flex")]
pub type FlexBackend = burn_flex::Flex;
/// The ndarray backend (when compiled in).
#[cfg(feature = "ndarray")]
pub type NdArrayBackend = burn_ndarray::NdArray<f32>;

/// The CUDA backend (fusion + autotune, f32 floats, i32 ints).
#[cfg(feature = "cuda")]
pub type CudaBackend = burn_cuda::Cuda<f32, i32>;

/// CUDA device `index` (call [`probe_cuda`] first: burn panics on a machine without a driver).
#[cfg(feature = "cuda")]
pub fn cuda_device(index: usize) -> burn::tensor::Device<CudaBackend> {
    burn_cuda::CudaDevice::new(index)
}

/// The device of the CPU backend.
pub fn cpu_device() -> burn::tensor::Device<CpuBackend> {
    Default::default()
}

/// Name of the CPU backend compiled in (`flex` or `ndarray`).
pub fn cpu_backend_name() -> &'static str {
    if cfg!(feature = "flex") {
        "flex"
    } else {
        "ndarray"
    }
}

/// A backend the Llama runs on: burn's [`Backend`] plus what the model needs of it (KV rows written
/// in place, the optional native forward pass). Every generic `B` of the model and engine is bound
/// by it.
pub trait ModelBackend: Backend {
    /// Whether [`ModelBackend::native_forward`] is implemented (then, with [`crate::Kernels::Native`],
    /// each row's result is bitwise independent of the rest of its batch).
    const NATIVE_FORWARD: bool = false;

    /// Whether the backend's tensors live in host memory, where [`ModelBackend::write_rows`] copies
    /// the rows through a host view (flex, ndarray); otherwise it uses device ops (CUDA).
    const HOST_MEMORY: bool = false;

    /// Overwrites rows `slots` of `store` (`[num_slots, width]`) with `rows` (`[slots.len(), width]`).
    /// `slots` are distinct and in range (checked by the caller).
    ///
    /// # Errors
    /// [`ModelError::Backend`] if the backend's data is not `f32`.
    fn write_rows(
        store: Tensor<Self, 2>,
        slots: &[u32],
        rows: Tensor<Self, 2>,
    ) -> Result<Tensor<Self, 2>> {
        if Self::HOST_MEMORY {
            write_rows_host(store, slots, rows)
        } else {
            write_rows_device(store, slots, rows)
        }
    }

    /// The backend's own forward pass of the whole model, where it has one (flex: the native CPU
    /// pass of [`crate::cpu`]); `None` runs the burn-op pass of [`Llama::forward`]. Same contract
    /// as [`Llama::forward`], which has already checked that `cache` fits the model.
    fn native_forward(
        _model: &Llama<Self>,
        _batch: &ForwardBatch,
        _cache: &mut KvCache<Self>,
    ) -> Option<Result<Tensor<Self, 2>>> {
        None
    }
}

/// Row write through host memory: on flex `into_data` and `from_data` are zero-copy for a uniquely
/// owned contiguous tensor, so the cost is the rows written (burn's `slice_assign`/`select_assign`
/// copy the whole store on this backend).
fn write_rows_host<B: Backend>(
    store: Tensor<B, 2>,
    slots: &[u32],
    rows: Tensor<B, 2>,
) -> Result<Tensor<B, 2>> {
    let device = store.device();
    let [_, width] = store.dims();
    let rows = rows.into_data();
    let src = rows
        .as_slice::<f32>()
        .map_err(|source| ModelError::Backend {
            what: "KV rows",
            source,
        })?;
    let mut data = store.into_data();
    let dst = data
        .as_mut_slice::<f32>()
        .map_err(|source| ModelError::Backend {
            what: "the KV cache",
            source,
        })?;
    for (k, &s) in slots.iter().enumerate() {
        let s = s as usize;
        dst[s * width..(s + 1) * width].copy_from_slice(&src[k * width..(k + 1) * width]);
    }
    Ok(Tensor::from_data(data, &device))
}

/// Row write with device ops (for GPU backends): `store += onehot(slots) · (rows - store[slots])`.
fn write_rows_device<B: Backend>(
    store: Tensor<B, 2>,
    slots: &[u32],
    rows: Tensor<B, 2>,
) -> Result<Tensor<B, 2>> {
    let device = store.device();
    let idx: Vec<i64> = slots.iter().map(|&s| s as i64).collect();
    let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [slots.len()]), &device);
    let old = store.clone().select(0, idx.clone());
    Ok(store.select_assign(0, idx, rows - old, IndexingUpdateOp::Add))
}

#[cfg(feature = "flex")]
impl ModelBackend for burn_flex::Flex {
    const NATIVE_FORWARD: bool = true;
    const HOST_MEMORY: bool = true;

    fn native_forward(
        model: &Llama<Self>,
        batch: &ForwardBatch,
        cache: &mut KvCache<Self>,
    ) -> Option<Result<Tensor<Self, 2>>> {
        crate::cpu::forward(model, batch, cache)
    }
}

#[cfg(feature = "ndarray")]
impl ModelBackend for burn_ndarray::NdArray<f32> {
    const HOST_MEMORY: bool = true;
}

#[cfg(feature = "cuda")]
impl ModelBackend for burn_cuda::Cuda<f32, i32> {}

/// The device asked for on the command line: `cpu`, `cuda` or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The CPU backend compiled in.
    #[default]
    Cpu,
    /// CUDA device `N`.
    Cuda(usize),
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Cpu => write!(f, "cpu"),
            DeviceChoice::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl FromStr for DeviceChoice {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || ModelError::Device {
            device: s.to_string(),
            message: "unknown device; use cpu, cuda or cuda:N".into(),
        };
        match s {
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda(0)),
            _ => match s.strip_prefix("cuda:") {
                Some(n) => n.parse().map(DeviceChoice::Cuda).map_err(|_| bad()),
                None => Err(bad()),
            },
        }
    }
}

/// Checks, without touching the CUDA runtime in a way that can panic, that device `index` is usable:
/// the driver library loads, `cuInit` succeeds, the device exists, NVRTC and the CUDA headers needed
/// to compile kernels are present.
///
/// # Errors
/// [`ModelError::Device`] saying what is missing; always an error when the `cuda` feature is off.
pub fn probe_cuda(index: usize) -> Result<()> {
    let dev = format!("cuda:{index}");
    #[cfg(feature = "cuda")]
    {
        let err = |message: String| ModelError::Device {
            device: dev.clone(),
            message,
        };
        // SAFETY: these functions only try to dlopen the libraries and report whether it worked.
        #[allow(unsafe_code)]
        let (driver, nvrtc) = unsafe {
            (
                cudarc::driver::sys::is_culib_present(),
                cudarc::nvrtc::sys::is_culib_present(),
            )
        };
        if !driver {
            return Err(err("the CUDA driver library (libcuda.so) was not found; is an NVIDIA driver installed?".into()));
        }
        if !nvrtc {
            return Err(err(
                "the NVRTC library (libnvrtc.so) was not found; install the CUDA toolkit".into(),
            ));
        }
        cudarc::driver::result::init().map_err(|e| err(format!("cuInit failed: {e:?}")))?;
        let n = cudarc::driver::result::device::get_count()
            .map_err(|e| err(format!("cannot count CUDA devices: {e:?}")))?;
        if index >= n.max(0) as usize {
            return Err(err(format!("only {n} CUDA device(s) present")));
        }
        let toolkit = std::env::var_os("CUDA_PATH").is_some()
            || ["/usr/local/cuda", "/opt/cuda", "/usr/bin/nvcc"]
                .iter()
                .any(|p| std::path::Path::new(p).exists());
        if !toolkit {
            return Err(err(
                "CUDA headers not found (set CUDA_PATH to the toolkit)".into()
            ));
        }
        Ok(())
    }
    #[cfg(not(feature = "cuda"))]
    {
        Err(ModelError::Device {
            device: dev,
            message: "this build has no CUDA support; rebuild with `--features cuda`".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_choices() {
        assert_eq!("cpu".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert_eq!(
            "cuda".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Cuda(0)
        );
        assert_eq!(
            "cuda:2".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Cuda(2)
        );
        assert!("tpu".parse::<DeviceChoice>().is_err());
        assert!("cuda:x".parse::<DeviceChoice>().is_err());
    }

    #[test]
    fn cuda_probe_never_panics() {
        // On machines without a GPU (CI) this is an error naming the device; with one it may pass.
        if let Err(e) = probe_cuda(0) {
            assert!(e.to_string().contains("cuda:0"));
        }
    }

    #[test]
    fn host_row_write_overwrites_only_the_given_rows() {
        let device = cpu_device();
        let store =
            Tensor::<CpuBackend, 2>::from_data(TensorData::new(vec![0f32; 12], [4, 3]), &device);
        let rows = Tensor::<CpuBackend, 2>::from_data(
            TensorData::new(vec![1f32, 2., 3., 4., 5., 6.], [2, 3]),
            &device,
        );
        let out = CpuBackend::write_rows(store, &[3, 1], rows).unwrap();
        let v: Vec<f32> = out.into_data().to_vec().unwrap();
        assert_eq!(v, vec![0., 0., 0., 4., 5., 6., 0., 0., 0., 1., 2., 3.]);
        let store =
            Tensor::<CpuBackend, 2>::from_data(TensorData::new(vec![7f32; 6], [2, 3]), &device);
        let rows = Tensor::<CpuBackend, 2>::from_data(
            TensorData::new(vec![1f32, 2., 3.], [1, 3]),
            &device,
        );
        let v: Vec<f32> = write_rows_device(store, &[1], rows)
            .unwrap()
            .into_data()
            .to_vec()
            .unwrap();
        assert_eq!(v, vec![7., 7., 7., 1., 2., 3.]);
    }
}
