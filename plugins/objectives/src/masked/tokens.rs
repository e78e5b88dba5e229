//! Masked-token prediction (BERT-style) from an encoder's per-token outputs.

use pretext_plugin_api::tch::{Kind, Reduction, Tensor};
use pretext_plugin_api::{EncoderHandle, LossOutput, Result, ensure};

use crate::decoder::Decoder;

/// Random score given to padding, above every draw of `rand`, so padding is never masked.
const NEVER_MASKED: f64 = 2.0;

/// How the chosen positions are corrupted, as shares of the chosen positions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenMasking {
    /// Share of the positions that are chosen for prediction.
    pub fraction: f64,
    /// Share of the chosen positions replaced by a random token instead of the mask id.
    pub random_share: f64,
    /// Share of the chosen positions left unchanged.
    pub keep_share: f64,
    pub mask_token: i64,
    pub pad_token: Option<i64>,
}

/// Predicts the original token at each chosen position with a head owned by the objective.
///
/// The loss is the cross-entropy over chosen positions only. Besides the loss it logs the
/// accuracy on the chosen positions and the accuracy of always predicting the most frequent token
/// among the training tokens seen so far (the unigram baseline).
pub struct MaskedTokens {
    pub head: Decoder,
    masking: TokenMasking,
    vocab_size: i64,
    counts: Vec<i64>,
}

impl MaskedTokens {
    /// Creates the head from per-token outputs of width `dim` to `vocab_size` logits.
    pub fn new(head: Decoder, masking: TokenMasking, vocab_size: i64) -> Self {
        Self { head, masking, vocab_size, counts: vec![0; vocab_size as usize] }
    }

    /// Chooses the positions to predict: each non-padding token with probability `fraction`, and
    /// at least one position per batch so that the loss is defined.
    pub fn choose(&self, ids: &Tensor) -> Result<Tensor> {
        let mut scores = Tensor::f_rand(ids.size(), (Kind::Float, ids.device()))?;
        if let Some(pad) = self.masking.pad_token {
            scores = scores.f_masked_fill(&ids.f_eq(pad)?, NEVER_MASKED)?;
        }
        let lowest = scores.f_min()?;
        ensure!(
            lowest.f_double_value(&[])? < NEVER_MASKED,
            "the batch contains only padding, so no token can be masked"
        );
        Ok(scores.f_lt(self.masking.fraction)?.f_logical_or(&scores.f_eq_tensor(&lowest)?)?)
    }

    /// Replaces the chosen positions by the mask id, a random token or the token itself.
    fn corrupt(&self, ids: &Tensor, chosen: &Tensor) -> Result<Tensor> {
        let draw = Tensor::f_rand(ids.size(), (Kind::Float, ids.device()))?;
        let mask_share = 1.0 - self.masking.random_share - self.masking.keep_share;
        let to_mask = chosen.f_logical_and(&draw.f_lt(mask_share)?)?;
        let to_random = chosen
            .f_logical_and(&draw.f_ge(mask_share)?)?
            .f_logical_and(&draw.f_lt(mask_share + self.masking.random_share)?)?;

        let random = ids.f_randint_like(self.vocab_size)?;
        let corrupted = random.f_where_self(&to_random, ids)?;
        Ok(corrupted.f_masked_fill(&to_mask, self.masking.mask_token)?)
    }

    /// Adds the batch's non-padding tokens to the unigram counts and returns the most frequent.
    fn update_counts(&mut self, ids: &Tensor) -> Result<i64> {
        let mut flat = ids.f_flatten(0, -1)?;
        if let Some(pad) = self.masking.pad_token {
            flat = flat.f_masked_select(&flat.f_ne(pad)?)?;
        }
        let batch_counts: Vec<i64> = Vec::try_from(
            flat.f_bincount(None::<Tensor>, self.vocab_size)?.f_to_kind(Kind::Int64)?,
        )?;
        for (total, added) in self.counts.iter_mut().zip(batch_counts) {
            *total += added;
        }
        let most_frequent =
            (0..self.counts.len()).max_by_key(|&id| (self.counts[id], -(id as i64)));
        Ok(most_frequent.unwrap_or(0) as i64)
    }

    /// Computes the loss of one batch of token ids `[batch, length]`.
    pub fn loss(&mut self, ids: &Tensor, encoder: &dyn EncoderHandle) -> Result<LossOutput> {
        let size = ids.size();
        ensure!(
            size.len() == 2 && ids.kind() == Kind::Int64,
            "masked_modeling needs int64 token ids of shape [batch, length], found {:?} of shape \
             {size:?}",
            ids.kind()
        );
        let high = ids.f_max()?.f_int64_value(&[])?;
        ensure!(
            high < self.vocab_size,
            "token id {high} is outside the dataset's vocabulary of {} ids",
            self.vocab_size
        );

        let chosen = self.choose(ids)?;
        let corrupted = self.corrupt(ids, &chosen)?;
        let Some(tokens) = encoder.forward(&corrupted, true)?.tokens else {
            pretext_plugin_api::bail!(
                "masked_modeling on tokens needs per-token outputs, but the encoder returned none; \
                 use an encoder with token outputs such as `transformer`"
            );
        };
        let dim = *tokens.size().last().unwrap_or(&0);
        let positions = chosen.f_flatten(0, -1)?.f_nonzero()?.f_squeeze_dim(1)?;
        let selected = tokens.f_reshape([-1, dim])?.f_index_select(0, &positions)?;
        let targets = ids.f_flatten(0, -1)?.f_index_select(0, &positions)?;
        let logits = self.head.forward(&selected)?;
        let loss =
            logits.f_cross_entropy_loss(&targets, None::<Tensor>, Reduction::Mean, -100, 0.0)?;

        let most_frequent = self.update_counts(ids)?;
        let accuracy = share_true(&logits.f_argmax(1, false)?.f_eq_tensor(&targets)?)?;
        let baseline = share_true(&targets.f_eq(most_frequent)?)?;
        let metrics = vec![
            ("masked_accuracy".to_owned(), accuracy),
            ("unigram_accuracy".to_owned(), baseline),
        ];
        Ok(LossOutput { loss, metrics })
    }
}

/// Returns the share of true values of a boolean tensor.
fn share_true(flags: &Tensor) -> Result<f64> {
    Ok(flags.f_to_kind(Kind::Float)?.f_mean(Kind::Float)?.f_double_value(&[])?)
}
