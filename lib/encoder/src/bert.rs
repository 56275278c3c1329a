//! A BERT encoder for embedding on the CPU that never computes padding.
//!
//! `candle_transformers::models::bert` pads every text of a pass to the longest one, so a pass
//! with one 256-token chunk and thirty short queries costs as much as 32 long chunks, and it
//! runs GELU, softmax and the bias/residual/layer-norm steps as separate generic tensor ops; it
//! was measured at a third of PyTorch's throughput. This encoder reads the same files (candle's
//! BERT `Config`, the same tensor names) but keeps the tokens of all texts packed in one
//! (tokens × hidden) matrix: the dense layers, nearly all the work, run once over real tokens
//! only (candle matmuls), attention runs per text over its own tokens so no mask is needed
//! (`attention`), and the element-wise steps are fused into single in-place passes (`kernels`).

use candle_core::{D, DType, Device, Result, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{Config, HiddenAct};

use super::{attention, kernels};

/// Dense weights stored transposed, (in, out), so the matmul reads both operands row-major.
struct Dense {
    weight: Tensor,
    bias: Tensor,
}

impl Dense {
    fn load(vb: VarBuilder, inputs: usize, outputs: usize) -> Result<Self> {
        let weight = vb.get((outputs, inputs), "weight")?;
        let bias = vb.get(outputs, "bias")?;
        Ok(Self { weight: weight.t()?.contiguous()?, bias })
    }

    /// x·W without the bias: the bias is added by the fused step that follows.
    fn matmul(&self, x: &Tensor) -> Result<Tensor> {
        x.matmul(&self.weight)
    }
}

/// Bias, then layer norm's gain and offset, stacked as (3, hidden) for the fused kernel.
fn norm_params(bias: &Tensor, vb: VarBuilder, hidden: usize) -> Result<Tensor> {
    let gamma = vb.get(hidden, "weight")?;
    let beta = vb.get(hidden, "bias")?;
    Tensor::stack(&[bias, &gamma, &beta], 0)
}

struct Layer {
    /// Query, key and value in one (hidden, 3·hidden) matmul; the query part is pre-scaled by
    /// 1/√head_size so the scores need no separate scaling pass.
    qkv: Dense,
    attention_out: Dense,
    attention_norm: Tensor,
    intermediate: Dense,
    output: Dense,
    output_norm: Tensor,
}

impl Layer {
    fn load(vb: VarBuilder, config: &Config) -> Result<Self> {
        let hidden = config.hidden_size;
        let head_size = hidden / config.num_attention_heads;
        let scale = 1.0 / (head_size as f64).sqrt();
        let attention = vb.pp("attention");
        let this = attention.pp("self");
        let query = Dense::load(this.pp("query"), hidden, hidden)?;
        let key = Dense::load(this.pp("key"), hidden, hidden)?;
        let value = Dense::load(this.pp("value"), hidden, hidden)?;
        let qkv = Dense {
            weight: Tensor::cat(&[&(query.weight * scale)?, &key.weight, &value.weight], 1)?.contiguous()?,
            bias: Tensor::cat(&[&(query.bias * scale)?, &key.bias, &value.bias], 0)?,
        };
        let attention_out = Dense::load(attention.pp("output").pp("dense"), hidden, hidden)?;
        let attention_norm = norm_params(&attention_out.bias, attention.pp("output").pp("LayerNorm"), hidden)?;
        let intermediate = Dense::load(vb.pp("intermediate").pp("dense"), hidden, config.intermediate_size)?;
        let output = Dense::load(vb.pp("output").pp("dense"), config.intermediate_size, hidden)?;
        let output_norm = norm_params(&output.bias, vb.pp("output").pp("LayerNorm"), hidden)?;
        Ok(Self { qkv, attention_out, attention_norm, intermediate, output, output_norm })
    }
}

pub struct Encoder {
    word_embeddings: Tensor,
    /// Position embeddings with the token-type-0 embedding already added (texts are single
    /// segments, so every token has type 0).
    position_embeddings: Tensor,
    embedding_norm: Tensor,
    layers: Vec<Layer>,
    heads: usize,
    activation: HiddenAct,
    eps: f32,
}

/// Where each text's tokens sit in the packed matrix.
pub struct Packed {
    pub ids: Vec<u32>,
    pub positions: Vec<u32>,
    /// (first row, token count) per text.
    pub spans: Vec<(usize, usize)>,
}

impl Packed {
    pub fn new<'a>(texts: impl IntoIterator<Item = &'a [u32]>) -> Self {
        let mut packed = Self { ids: Vec::new(), positions: Vec::new(), spans: Vec::new() };
        for ids in texts {
            packed.spans.push((packed.ids.len(), ids.len()));
            packed.ids.extend_from_slice(ids);
            packed.positions.extend(0..ids.len() as u32);
        }
        packed
    }
}

impl Encoder {
    pub fn load(vb: VarBuilder, config: &Config) -> Result<Self> {
        // Checkpoints name the encoder `embeddings.…`, `bert.embeddings.…` or
        // `<model_type>.embeddings.…`; take the first that is there, as candle's BertModel does.
        let probe = "embeddings.word_embeddings.weight";
        let vb = if vb.contains_tensor(probe) {
            vb
        } else if vb.contains_tensor(&format!("bert.{probe}")) {
            vb.pp("bert")
        } else if let Some(model_type) =
            config.model_type.as_deref().filter(|t| vb.contains_tensor(&format!("{t}.{probe}")))
        {
            vb.pp(model_type)
        } else {
            vb
        };
        let hidden = config.hidden_size;
        if config.num_attention_heads == 0 || !hidden.is_multiple_of(config.num_attention_heads) {
            candle_core::bail!(
                "hidden_size {hidden} is not a multiple of num_attention_heads {}",
                config.num_attention_heads
            );
        }
        let embeddings = vb.pp("embeddings");
        let word_embeddings = embeddings.pp("word_embeddings").get((config.vocab_size, hidden), "weight")?;
        let positions = embeddings.pp("position_embeddings").get((config.max_position_embeddings, hidden), "weight")?;
        let token_type =
            embeddings.pp("token_type_embeddings").get((config.type_vocab_size, hidden), "weight")?.get(0)?;
        let position_embeddings = positions.broadcast_add(&token_type)?;
        let zeros = Tensor::zeros(hidden, DType::F32, vb.device())?;
        let embedding_norm = norm_params(&zeros, embeddings.pp("LayerNorm"), hidden)?;
        let encoder = vb.pp("encoder").pp("layer");
        let layers = (0..config.num_hidden_layers)
            .map(|index| Layer::load(encoder.pp(index.to_string()), config))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            word_embeddings,
            position_embeddings,
            embedding_norm,
            layers,
            heads: config.num_attention_heads,
            activation: config.hidden_act,
            eps: config.layer_norm_eps as f32,
        })
    }

    /// The last hidden state of every token, packed as (tokens, hidden) in `packed`'s order.
    pub fn forward(&self, packed: &Packed, device: &Device) -> Result<Tensor> {
        let tokens = packed.ids.len();
        let ids = Tensor::from_slice(&packed.ids, tokens, device)?;
        let positions = Tensor::from_slice(&packed.positions, tokens, device)?;
        // Every matmul output below is fresh and read once, so the fused steps overwrite it.
        let mut x = self.word_embeddings.index_select(&ids, 0)?;
        let positions = self.position_embeddings.index_select(&positions, 0)?;
        kernels::add_layer_norm_(&x, &positions, &self.embedding_norm, self.eps)?;
        for layer in &self.layers {
            let context = attention::attention(&layer.qkv.matmul(&x)?, &layer.qkv.bias, &packed.spans, self.heads)?;
            let attended = layer.attention_out.matmul(&context)?;
            kernels::add_layer_norm_(&attended, &x, &layer.attention_norm, self.eps)?;
            let inner = layer.intermediate.matmul(&attended)?;
            kernels::bias_activation_(&inner, &layer.intermediate.bias, self.activation)?;
            x = layer.output.matmul(&inner)?;
            kernels::add_layer_norm_(&x, &attended, &layer.output_norm, self.eps)?;
        }
        Ok(x)
    }
}

/// Mean of each text's token states (sentence-transformers' mean pooling: padding never enters
/// because there is none), then unit length (its Normalize module).
pub fn mean_pool_normalize(hidden: &Tensor, spans: &[(usize, usize)]) -> Result<Vec<Vec<f32>>> {
    let width = hidden.dim(D::Minus1)?;
    let states = hidden.flatten_all()?.to_vec1::<f32>()?;
    Ok(spans
        .iter()
        .map(|&(start, len)| {
            let mut mean = vec![0f32; width];
            for row in states[start * width..(start + len) * width].chunks_exact(width) {
                mean.iter_mut().zip(row).for_each(|(m, v)| *m += v);
            }
            let count = len.max(1) as f32;
            mean.iter_mut().for_each(|m| *m /= count);
            let norm = mean.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            mean.iter_mut().for_each(|m| *m /= norm);
            mean
        })
        .collect())
}
