//! Self-attention of packed texts, each over its own tokens, as one candle custom op.
//!
//! Built from tensor ops, attention per text and head is a handful of tiny matmuls (32 × 32 for
//! a short text), a softmax and two layout copies; across 32 texts, 12 heads and 6 layers that
//! is thousands of small ops whose fixed costs made attention 30% of a pass for 10% of its
//! arithmetic. Here each text is one task: per head its keys are gathered transposed (with the
//! bias the QKV matmul left out), and scores and outputs are computed in register tiles of
//! 8 query rows × one SIMD register, written with `pulp`'s explicit SIMD and dispatched to the
//! widest the CPU has (AVX-512 here). Texts are spread over threads by cost (tokens²), and each
//! writes its own rows of the output, so no locking is needed.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, bail};

use super::kernels::{contiguous, exp, max, sum};

/// Query rows computed together: their scores share every key load.
const ROWS: usize = 8;
/// Rows and head columns are padded to multiples of this (the f32 lanes of an AVX-512
/// register, and a multiple of narrower ones).
const LANES: usize = 16;

/// `qkv` is (tokens, 3·hidden) without its bias (3·hidden), which is added here as the values
/// are read; queries are already scaled by 1/√head_size. The result is (tokens, hidden).
/// `spans` are (first row, tokens) per text, in order and covering all rows.
pub fn attention(qkv: &Tensor, bias: &Tensor, spans: &[(usize, usize)], heads: usize) -> Result<Tensor> {
    qkv.apply_op2_no_bwd(bias, &Attention { spans, heads })
}

struct Attention<'a> {
    spans: &'a [(usize, usize)],
    heads: usize,
}

/// One text's share of the work and of the output.
struct Text<'a> {
    start: usize,
    len: usize,
    out: &'a mut [f32],
}

impl CustomOp2 for Attention<'_> {
    fn name(&self) -> &'static str {
        "packed-attention"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let qkv = contiguous(s1, l1, "attention")?;
        let bias = contiguous(s2, l2, "attention")?;
        let &[tokens, width] = l1.dims() else { bail!("attention: expected (tokens, 3·hidden)") };
        let hidden = width / 3;
        if width % 3 != 0 || self.heads == 0 || hidden % self.heads != 0 || bias.len() != width {
            bail!("attention: width {width} (bias {}) does not split into 3 × {} heads", bias.len(), self.heads);
        }
        let mut out = vec![0f32; tokens * hidden];
        let mut texts = Vec::with_capacity(self.spans.len());
        let mut rest = out.as_mut_slice();
        let mut next = 0;
        for &(start, len) in self.spans {
            if start != next || len * hidden > rest.len() {
                bail!("attention: spans must be in order and cover the tokens");
            }
            let (mine, tail) = std::mem::take(&mut rest).split_at_mut(len * hidden);
            texts.push(Text { start, len, out: mine });
            rest = tail;
            next = start + len;
        }
        if next != tokens {
            bail!("attention: spans cover {next} of {tokens} tokens");
        }

        // Longest first onto the least loaded thread: cost grows with the square of a text.
        texts.sort_by_key(|t| std::cmp::Reverse(t.len));
        let threads = candle_core::utils::get_num_threads().clamp(1, texts.len().max(1));
        let mut shares: Vec<(usize, Vec<Text>)> = (0..threads).map(|_| (0, Vec::new())).collect();
        for text in texts {
            if let Some(share) = shares.iter_mut().min_by_key(|(load, _)| *load) {
                share.0 += text.len * text.len + text.len;
                share.1.push(text);
            }
        }
        let shape = Qkv { qkv, bias, hidden, heads: self.heads };
        let arch = pulp::Arch::new();
        std::thread::scope(|scope| {
            let mut shares = shares.into_iter().map(|(_, texts)| texts);
            let here = shares.next();
            for texts in shares {
                scope.spawn(move || arch.dispatch(Share { shape, texts }));
            }
            if let Some(texts) = here {
                arch.dispatch(Share { shape, texts });
            }
        });
        Ok((CpuStorage::F32(out), (tokens, hidden).into()))
    }
}

#[derive(Clone, Copy)]
struct Qkv<'a> {
    qkv: &'a [f32],
    bias: &'a [f32],
    hidden: usize,
    heads: usize,
}

/// The texts one thread computes, as pulp's `WithSimd` so that everything below is compiled
/// for the CPU's widest SIMD.
struct Share<'a> {
    shape: Qkv<'a>,
    texts: Vec<Text<'a>>,
}

impl pulp::WithSimd for Share<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) {
        let mut scratch = Scratch::default();
        for text in self.texts {
            text_attention(simd, self.shape, text, &mut scratch);
        }
    }
}

/// Buffers reused across heads and texts.
#[derive(Default)]
struct Scratch {
    /// Keys of one head, transposed: (head_size, padded tokens).
    keys: Vec<f32>,
    /// Values of one head: (tokens, padded head_size).
    values: Vec<f32>,
    /// Scores of one tile: (ROWS, padded tokens).
    scores: Vec<f32>,
    /// Their softmax: (ROWS, padded tokens).
    weights: Vec<f32>,
    /// Output of one tile: (ROWS, padded head_size).
    tile: Vec<f32>,
    /// Queries of one tile, with their bias: (ROWS, head_size); zero past the end of a text.
    queries: Vec<f32>,
}

#[inline(always)]
fn text_attention<S: pulp::Simd>(simd: S, shape: Qkv, text: Text, scratch: &mut Scratch) {
    let Qkv { qkv, bias, hidden, heads } = shape;
    let head_size = hidden / heads;
    let width = 3 * hidden;
    let len = text.len;
    // Padding to whole registers: padded keys and values are zero, so padded lanes add nothing,
    // and padded scores are never read.
    let tokens_padded = len.div_ceil(LANES) * LANES;
    let head_padded = head_size.div_ceil(LANES) * LANES;
    let rows = &qkv[text.start * width..(text.start + len) * width];
    scratch.scores.resize(ROWS * tokens_padded, 0.0);
    scratch.weights.resize(ROWS * tokens_padded, 0.0);
    scratch.tile.resize(ROWS * head_padded, 0.0);

    for head in 0..heads {
        let (q_at, k_at, v_at) = (head * head_size, hidden + head * head_size, 2 * hidden + head * head_size);
        scratch.keys.clear();
        scratch.keys.resize(head_size * tokens_padded, 0.0);
        scratch.values.clear();
        scratch.values.resize(len * head_padded, 0.0);
        let (k_bias, v_bias) = (&bias[k_at..k_at + head_size], &bias[v_at..v_at + head_size]);
        for (j, row) in rows.chunks_exact(width).enumerate() {
            for (c, (&k, &b)) in row[k_at..k_at + head_size].iter().zip(k_bias).enumerate() {
                scratch.keys[c * tokens_padded + j] = k + b;
            }
            let values = &mut scratch.values[j * head_padded..j * head_padded + head_size];
            for ((d, &v), &b) in values.iter_mut().zip(&row[v_at..v_at + head_size]).zip(v_bias) {
                *d = v + b;
            }
        }

        for first in (0..len).step_by(ROWS) {
            let count = ROWS.min(len - first);
            scratch.queries.clear();
            scratch.queries.resize(ROWS * head_size, 0.0);
            let tile_rows = rows[first * width..].chunks_exact(width).take(count);
            for (query, row) in scratch.queries.chunks_exact_mut(head_size).zip(tile_rows) {
                for ((d, &q), &b) in
                    query.iter_mut().zip(&row[q_at..q_at + head_size]).zip(&bias[q_at..q_at + head_size])
                {
                    *d = q + b;
                }
            }
            let queries: [&[f32]; ROWS] = std::array::from_fn(|r| &scratch.queries[r * head_size..(r + 1) * head_size]);
            scores_tile(simd, &queries, &scratch.keys, &mut scratch.scores, tokens_padded);
            let scored =
                scratch.scores.chunks_exact(tokens_padded).zip(scratch.weights.chunks_exact_mut(tokens_padded));
            for (scores, weights) in scored.take(count) {
                softmax(&scores[..len], &mut weights[..len]);
            }
            // Rows past `count` hold stale weights; their outputs are computed and dropped.
            let weights: [&[f32]; ROWS] =
                std::array::from_fn(|r| &scratch.weights[r * tokens_padded..r * tokens_padded + len]);
            output_tile(simd, &weights, &scratch.values, &mut scratch.tile, head_padded);
            for (r, row) in scratch.tile.chunks_exact(head_padded).take(count).enumerate() {
                let at = (first + r) * hidden + head * head_size;
                text.out[at..at + head_size].copy_from_slice(&row[..head_size]);
            }
        }
    }
}

/// scores[r][j] = Σ_c queries[r][c] · keys[c][j] for ROWS query rows, one register of keys at a
/// time: ROWS accumulator registers, each key register loaded once for all rows, each query
/// value broadcast from where it lies. Written with pulp's explicit SIMD: left to itself the
/// compiler vectorised across rows, with gathers.
#[inline(always)]
fn scores_tile<S: pulp::Simd>(
    simd: S,
    queries: &[&[f32]; ROWS],
    keys: &[f32],
    scores: &mut [f32],
    tokens_padded: usize,
) {
    let head_size = queries[0].len();
    for block in 0..tokens_padded / S::F32_LANES {
        let mut acc = [simd.splat_f32s(0.0); ROWS];
        for (c, keys_c) in keys.chunks_exact(tokens_padded).take(head_size).enumerate() {
            let (keys_c, _) = S::as_simd_f32s(keys_c);
            // Always there: tokens_padded is a whole number of registers.
            let Some(&k) = keys_c.get(block) else { continue };
            for (a, q) in acc.iter_mut().zip(queries) {
                *a = simd.mul_add_e_f32s(simd.splat_f32s(q[c]), k, *a);
            }
        }
        for (a, row) in acc.iter().zip(scores.chunks_exact_mut(tokens_padded)) {
            if let Some(out) = S::as_mut_simd_f32s(row).0.get_mut(block) {
                *out = *a;
            }
        }
    }
}

/// `dst = softmax(src)`; from one buffer into another, which is what the compiler vectorises
/// (in place, it kept `exp` scalar).
#[inline(always)]
fn softmax(src: &[f32], dst: &mut [f32]) {
    let top = max(src);
    for (d, &v) in dst.iter_mut().zip(src) {
        *d = exp(v - top);
    }
    let inverse = 1.0 / sum(dst);
    dst.iter_mut().for_each(|d| *d *= inverse);
}

/// tile[r][c] = Σ_j weights[r][j] · values[j][c], one register of output columns at a time.
#[inline(always)]
fn output_tile<S: pulp::Simd>(simd: S, weights: &[&[f32]; ROWS], values: &[f32], tile: &mut [f32], head_padded: usize) {
    let len = weights[0].len();
    for block in 0..head_padded / S::F32_LANES {
        let mut acc = [simd.splat_f32s(0.0); ROWS];
        for (j, values_j) in values.chunks_exact(head_padded).take(len).enumerate() {
            let (values_j, _) = S::as_simd_f32s(values_j);
            // Always there: head_padded is a whole number of registers.
            let Some(&v) = values_j.get(block) else { continue };
            for (a, w) in acc.iter_mut().zip(weights) {
                *a = simd.mul_add_e_f32s(simd.splat_f32s(w[j]), v, *a);
            }
        }
        for (a, row) in acc.iter().zip(tile.chunks_exact_mut(head_padded)) {
            if let Some(out) = S::as_mut_simd_f32s(row).0.get_mut(block) {
                *out = *a;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    /// `n` fixed values in [-2, 2) that look random, so a failure can be replayed.
    fn spread(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
            })
            .collect()
    }

    /// The op against attention written with plain tensor ops, on texts of awkward lengths
    /// (not multiples of 8 or 16) and a head size that is not a multiple of 16.
    #[test]
    fn matches_attention_from_tensor_ops() {
        let device = Device::Cpu;
        for (heads, head_size) in [(12, 32), (3, 20)] {
            let hidden = heads * head_size;
            let lens = [1usize, 7, 16, 17, 40];
            let tokens: usize = lens.iter().sum();
            let qkv = Tensor::from_vec(spread(tokens * 3 * hidden, 1), (tokens, 3 * hidden), &device).unwrap();
            let mut spans = Vec::new();
            let mut start = 0;
            for len in lens {
                spans.push((start, len));
                start += len;
            }
            let bias = Tensor::from_vec(spread(3 * hidden, 2), 3 * hidden, &device).unwrap();
            let got = attention(&qkv, &bias, &spans, heads).unwrap();
            let qkv = qkv.broadcast_add(&bias).unwrap();

            let mut expected = Vec::new();
            for &(start, len) in &spans {
                let t = qkv.narrow(0, start, len).unwrap().reshape((len, 3, heads, head_size)).unwrap();
                let t = t.permute((1, 2, 0, 3)).unwrap().contiguous().unwrap();
                let (q, k, v) = (t.get(0).unwrap(), t.get(1).unwrap(), t.get(2).unwrap());
                let scores = q.matmul(&k.t().unwrap()).unwrap();
                let weights = candle_nn::ops::softmax_last_dim(&scores).unwrap();
                let out = weights.matmul(&v).unwrap().transpose(0, 1).unwrap().contiguous().unwrap();
                expected.push(out.reshape((len, hidden)).unwrap());
            }
            let expected = Tensor::cat(&expected, 0).unwrap();
            let diff = (got - expected).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            // A wrong index or mask is off by tenths; reordered f32 sums by about 1e-6.
            assert!(diff < 1e-4, "heads {heads} × {head_size}: max difference {diff}");
        }
    }

    #[test]
    fn spans_must_cover_the_tokens() {
        let qkv = Tensor::zeros((10, 12), candle_core::DType::F32, &Device::Cpu).unwrap();
        let bias = Tensor::zeros(12, candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(attention(&qkv, &bias, &[(0, 4)], 2).is_err());
        assert!(attention(&qkv, &bias, &[(0, 4), (5, 5)], 2).is_err());
        assert!(attention(&qkv, &bias, &[(0, 4), (4, 6)], 2).is_ok());
    }
}
