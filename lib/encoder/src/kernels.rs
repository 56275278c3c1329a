//! Fused element-wise steps of the encoder, as candle custom ops on f32 rows, in place.
//!
//! Generic candle runs `x + bias`, GELU, `+ residual` and layer norm as separate ops, each
//! allocating a new tensor and streaming it through memory, and its GELU calls the scalar libm
//! `erff` per element (measured at 8% of a pass). Here each step is one pass over the rows of
//! the matmul output it follows, overwriting it (that tensor is fresh and used once), split
//! across threads, with an `erf`/`exp` written as plain arithmetic the compiler can vectorise.
//! The approximation errors (erf: 1.5e-7 absolute, exp: ~2 ulp) are far below what the
//! reference test can see.

use candle_core::{CpuStorage, InplaceOp2, InplaceOp3, Layout, Result, Tensor, bail};
use candle_transformers::models::bert::HiddenAct;

/// Below this many elements a step runs on the calling thread: spawning costs more.
const PARALLEL_MIN: usize = 1 << 15;

/// `x = activation(x + bias)`, bias broadcast over the rows. `"gelu"` in a BERT config is the
/// exact (erf) GELU; `gelu_approximate` the tanh one.
pub fn bias_activation_(x: &Tensor, bias: &Tensor, activation: HiddenAct) -> Result<()> {
    x.inplace_op2(bias, &BiasActivation { activation })
}

/// `x = layer_norm(x + residual + params[0]) · params[1] + params[2]` per row: a dense
/// layer's bias, the residual connection and the layer norm that follows it, in one pass.
pub fn add_layer_norm_(x: &Tensor, residual: &Tensor, params: &Tensor, eps: f32) -> Result<()> {
    x.inplace_op3(residual, params, &AddLayerNorm { eps })
}

pub(super) fn contiguous<'a>(storage: &'a CpuStorage, layout: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else { bail!("{what}: expected f32") };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("{what}: expected a contiguous tensor"),
    }
}

fn contiguous_mut<'a>(storage: &'a mut CpuStorage, layout: &Layout, what: &str) -> Result<&'a mut [f32]> {
    let CpuStorage::F32(data) = storage else { bail!("{what}: expected f32") };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&mut data[start..end]),
        None => bail!("{what}: expected a contiguous tensor"),
    }
}

fn width(layout: &Layout) -> Result<usize> {
    match layout.dims().last() {
        Some(&w) if w > 0 => Ok(w),
        _ => bail!("expected rows of a positive width"),
    }
}

/// One fused step over a block of rows. `rows` is `#[inline(always)]` in every implementation so
/// that it is compiled inside `pulp`'s dispatch, i.e. for the widest SIMD the CPU offers
/// (AVX-512 here, chosen at run time); a plain Rust build targets SSE2 only.
trait RowKernel: Sync {
    /// Rewrites `block`, which starts at row `first_row`.
    fn rows(&self, first_row: usize, block: &mut [f32]);
}

/// Runs `kernel` over `data`, (rows × width), split across as many threads as candle uses for
/// its matmuls.
fn run_rows<K: RowKernel>(data: &mut [f32], width: usize, kernel: &K) {
    let rows = data.len() / width;
    let threads = if data.len() < PARALLEL_MIN { 1 } else { candle_core::utils::get_num_threads().clamp(1, rows) };
    let arch = pulp::Arch::new();
    if threads <= 1 {
        arch.dispatch(Block { kernel, first_row: 0, block: data });
        return;
    }
    let per_thread = rows.div_ceil(threads);
    std::thread::scope(|scope| {
        for (i, block) in data.chunks_mut(per_thread * width).enumerate() {
            scope.spawn(move || arch.dispatch(Block { kernel, first_row: i * per_thread, block }));
        }
    });
}

/// A kernel applied to one block, as pulp's `WithSimd`: a closure here would be compiled as a
/// function of its own, outside the SIMD context, and the kernel with it.
struct Block<'a, K> {
    kernel: &'a K,
    first_row: usize,
    block: &'a mut [f32],
}

impl<K: RowKernel> pulp::WithSimd for Block<'_, K> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        self.kernel.rows(self.first_row, self.block);
    }
}

struct BiasActivation {
    activation: HiddenAct,
}

/// Generic over the activation (not a `fn` pointer) so it is inlined and the loop vectorises.
struct BiasRows<'a, F> {
    bias: &'a [f32],
    activation: F,
}

impl<F: Fn(f32) -> f32 + Sync> RowKernel for BiasRows<'_, F> {
    #[inline(always)]
    fn rows(&self, _first_row: usize, block: &mut [f32]) {
        for row in block.chunks_exact_mut(self.bias.len()) {
            for (d, &b) in row.iter_mut().zip(self.bias) {
                *d = (self.activation)(*d + b);
            }
        }
    }
}

impl InplaceOp2 for BiasActivation {
    fn name(&self) -> &'static str {
        "bias-activation"
    }

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<()> {
        let width = width(l1)?;
        let x = contiguous_mut(s1, l1, "bias-activation")?;
        let bias = contiguous(s2, l2, "bias-activation")?;
        if bias.len() != width {
            bail!("bias-activation: bias of {} for rows of {width}", bias.len());
        }
        match self.activation {
            HiddenAct::Gelu => run_rows(x, width, &BiasRows { bias, activation: gelu_erf }),
            HiddenAct::GeluApproximate => run_rows(x, width, &BiasRows { bias, activation: gelu_tanh }),
            HiddenAct::Relu => run_rows(x, width, &BiasRows { bias, activation: |v: f32| v.max(0.0) }),
        }
        Ok(())
    }
}

struct AddLayerNorm {
    eps: f32,
}

struct AddNormRows<'a> {
    residual: &'a [f32],
    bias: &'a [f32],
    gamma: &'a [f32],
    beta: &'a [f32],
    eps: f32,
}

impl RowKernel for AddNormRows<'_> {
    #[inline(always)]
    fn rows(&self, first_row: usize, block: &mut [f32]) {
        let width = self.bias.len();
        let residual = self.residual[first_row * width..].chunks_exact(width);
        for (row, res) in block.chunks_exact_mut(width).zip(residual) {
            for ((d, &r), &b) in row.iter_mut().zip(res).zip(self.bias) {
                *d += r + b;
            }
            let mean = sum(row) / width as f32;
            let mut squares = [0f32; 16];
            let chunks = row.chunks_exact(16);
            let rest: f32 = chunks.remainder().iter().map(|v| (v - mean) * (v - mean)).sum();
            for chunk in chunks {
                squares.iter_mut().zip(chunk).for_each(|(s, v)| *s += (v - mean) * (v - mean));
            }
            let variance = (squares.iter().sum::<f32>() + rest) / width as f32;
            let scale = 1.0 / (variance + self.eps).sqrt();
            for ((d, &g), &b) in row.iter_mut().zip(self.gamma).zip(self.beta) {
                *d = (*d - mean) * scale * g + b;
            }
        }
    }
}

impl InplaceOp3 for AddLayerNorm {
    fn name(&self) -> &'static str {
        "add-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        let width = width(l1)?;
        let x = contiguous_mut(s1, l1, "add-layer-norm")?;
        let residual = contiguous(s2, l2, "add-layer-norm")?;
        let params = contiguous(s3, l3, "add-layer-norm")?;
        if residual.len() != x.len() || params.len() != 3 * width {
            bail!("add-layer-norm: shapes {:?}, {:?}, {:?}", l1.dims(), l2.dims(), l3.dims());
        }
        let (bias, rest) = params.split_at(width);
        let (gamma, beta) = rest.split_at(width);
        run_rows(x, width, &AddNormRows { residual, bias, gamma, beta, eps: self.eps });
        Ok(())
    }
}

/// `0.5·x·(1 + erf(x/√2))`.
#[inline(always)]
fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`, with tanh(y) = 1 − 2/(e^{2y} + 1).
#[inline(always)]
fn gelu_tanh(x: f32) -> f32 {
    let y = 0.797_884_6 * (x + 0.044_715 * x * x * x);
    0.5 * x * (2.0 - 2.0 / (exp(2.0 * y) + 1.0))
}

/// Abramowitz & Stegun 7.1.26 (absolute error ≤ 1.5e-7), the formula PyTorch's vectorised CPU
/// `erf` uses too; branch-free so a loop of it vectorises.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = ((((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_8) * t - 0.284_496_74) * t + 0.254_829_6) * t;
    (1.0 - poly * exp(-a * a)).copysign(x)
}

/// `e^x`: 2^n · e^r with n = round(x·log₂e) and Cephes' polynomial for e^r (|r| ≤ ln2/2).
/// Branch-free and without float-to-int casts (Rust's saturating `as` does not vectorise), so
/// a loop of it compiles to SIMD, unlike libm's `expf`.
#[inline(always)]
#[allow(clippy::excessive_precision, reason = "Cephes' constants, written as published")]
pub(super) fn exp(x: f32) -> f32 {
    // Outside this range the result under- or overflows f32 anyway; clamping keeps 2^n a normal
    // number.
    let x = x.clamp(-87.0, 88.0);
    // t = 1.5·2^23 + n: adding 1.5·2^23 rounds to the nearest integer, which then sits in the
    // low bits of t's mantissa.
    const ROUND: f32 = 12_582_912.0;
    let t = x * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = x - n * 0.693_359_375 + n * 2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 0.166_666_65) * r
        + 0.5;
    let e_r = p * r * r + r + 1.0;
    let two_to_n = f32::from_bits(t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127) << 23);
    e_r * two_to_n
}

/// Sum with 16 independent accumulators: a plain `iter().sum()` must add in order, which
/// keeps it scalar.
#[inline(always)]
pub(super) fn sum(xs: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let chunks = xs.chunks_exact(16);
    let rest: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        lanes.iter_mut().zip(chunk).for_each(|(lane, v)| *lane += v);
    }
    lanes.iter().sum::<f32>() + rest
}

#[inline(always)]
pub(super) fn max(xs: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let chunks = xs.chunks_exact(16);
    let rest = chunks.remainder().iter().fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    for chunk in chunks {
        lanes.iter_mut().zip(chunk).for_each(|(lane, &v)| *lane = if v > *lane { v } else { *lane });
    }
    lanes.iter().fold(rest, |m, &v| if v > m { v } else { m })
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    #[test]
    fn exp_and_erf_are_accurate() {
        let mut worst_exp = 0f32;
        let mut worst_erf = 0f64;
        for i in -8700..=8800 {
            let x = i as f32 / 100.0;
            let rel = ((exp(x) as f64 - (x as f64).exp()) / (x as f64).exp()).abs() as f32;
            worst_exp = worst_exp.max(rel);
        }
        for i in -600..=600 {
            let x = i as f32 / 100.0;
            worst_erf = worst_erf.max((erf(x) as f64 - libm_erf(x as f64)).abs());
        }
        assert!(worst_exp < 1e-6, "exp relative error {worst_exp}");
        assert!(worst_erf < 3e-7, "erf absolute error {worst_erf}");
        assert_eq!(gelu_erf(0.0), 0.0);
        assert!((gelu_erf(1.0) - 0.841_344_7).abs() < 1e-6);
    }

    /// erf by its Taylor series (exact enough for |x| ≤ 6 in f64), to check the approximation.
    fn libm_erf(x: f64) -> f64 {
        if x.abs() > 5.0 {
            return x.signum();
        }
        let mut sum = 0f64;
        let mut term = x;
        for n in 0..200 {
            sum += term / (2 * n + 1) as f64;
            term *= -x * x / (n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn fused_steps_match_plain_tensor_ops() {
        let device = Device::Cpu;
        let x = Tensor::randn(0f32, 2.0, (300, 128), &device).unwrap();
        let residual = Tensor::randn(0f32, 1.0, (300, 128), &device).unwrap();
        let bias = Tensor::randn(0f32, 1.0, 128, &device).unwrap();
        let gamma = Tensor::randn(1f32, 0.1, 128, &device).unwrap();
        let beta = Tensor::randn(0f32, 0.1, 128, &device).unwrap();
        let max_diff =
            |a: &Tensor, b: &Tensor| (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        let fresh = || x.copy().unwrap();

        let with_bias = x.broadcast_add(&bias).unwrap();
        for (activation, expected) in [
            (HiddenAct::Gelu, with_bias.gelu_erf().unwrap()),
            (HiddenAct::GeluApproximate, with_bias.gelu().unwrap()),
            (HiddenAct::Relu, with_bias.relu().unwrap()),
        ] {
            let got = fresh();
            bias_activation_(&got, &bias, activation).unwrap();
            assert!(max_diff(&got, &expected) < 1e-5, "{activation:?}");
        }

        let expected = candle_nn::ops::layer_norm(&(&with_bias + &residual).unwrap(), &gamma, &beta, 1e-12).unwrap();
        let params = Tensor::stack(&[&bias, &gamma, &beta], 0).unwrap();
        let got = fresh();
        add_layer_norm_(&got, &residual, &params, 1e-12).unwrap();
        assert!(max_diff(&got, &expected) < 1e-4);
    }
}
