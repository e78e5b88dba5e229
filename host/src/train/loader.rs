//! Batch order and background prefetching.

use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::{Scope, ScopedJoinHandle};

use pretext_plugin_api::{Batch, Split};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::plugins::{DatasetInstance, PluginCallError};

/// The sample order of one epoch: shuffled by the host's own generator, seeded from the
/// experiment seed and the epoch, so that the order never depends on a plugin.
pub fn epoch_order(len: usize, seed: u64, epoch: u64, shuffle: bool) -> Vec<i64> {
    let mut order: Vec<i64> = (0..len as i64).collect();
    if shuffle {
        let stream = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ epoch;
        let mut rng = ChaCha8Rng::seed_from_u64(stream);
        order.shuffle(&mut rng);
    }
    order
}

/// Splits an order into batches.
pub fn batches(order: &[i64], batch_size: usize, drop_last: bool) -> Vec<Vec<i64>> {
    order
        .chunks(batch_size)
        .filter(|chunk| !drop_last || chunk.len() == batch_size)
        .map(<[i64]>::to_vec)
        .collect()
}

/// The batches of one epoch, read inline or by a background thread.
pub enum BatchSource<'scope> {
    /// Each batch is read when the loop asks for it.
    Inline { dataset: &'scope DatasetInstance, batches: std::vec::IntoIter<Vec<i64>> },
    /// A scoped thread reads ahead; it stops when this is dropped.
    Prefetch(Receiver<Result<Batch, PluginCallError>>, ScopedJoinHandle<'scope, ()>),
}

impl<'scope> BatchSource<'scope> {
    /// Reads `batches` of the train split, `depth` batches ahead on a background thread, or
    /// inline when `depth` is 0.
    pub fn new(
        scope: &'scope Scope<'scope, '_>,
        dataset: &'scope DatasetInstance,
        batches: Vec<Vec<i64>>,
        depth: usize,
    ) -> Self {
        if depth == 0 {
            return BatchSource::Inline { dataset, batches: batches.into_iter() };
        }
        let (receiver, handle) = prefetch(scope, dataset, batches, depth);
        BatchSource::Prefetch(receiver, handle)
    }
}

impl Iterator for BatchSource<'_> {
    type Item = Result<Batch, PluginCallError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            BatchSource::Inline { dataset, batches } => {
                batches.next().map(|indices| dataset.batch(Split::Train, &indices))
            }
            BatchSource::Prefetch(receiver, _) => receiver.recv().ok(),
        }
    }
}

/// Reads `batches` of the train split on a background thread, at most `depth` ahead. The thread
/// stops when the receiver is dropped.
fn prefetch<'scope>(
    scope: &'scope Scope<'scope, '_>,
    dataset: &'scope DatasetInstance,
    batches: Vec<Vec<i64>>,
    depth: usize,
) -> (Receiver<Result<Batch, PluginCallError>>, ScopedJoinHandle<'scope, ()>) {
    let (sender, receiver) = sync_channel(depth);
    let handle = scope.spawn(move || {
        for indices in batches {
            let batch = dataset.batch(Split::Train, &indices);
            let failed = batch.is_err();
            if sender.send(batch).is_err() || failed {
                break;
            }
        }
    });
    (receiver, handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_a_permutation_and_seeded() {
        let first = epoch_order(100, 7, 0, true);
        let mut sorted = first.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<i64>>());
        assert_eq!(first, epoch_order(100, 7, 0, true));
        assert_ne!(first, epoch_order(100, 7, 1, true));
    }

    #[test]
    fn drop_last_removes_short_batch() {
        let order: Vec<i64> = (0..10).collect();
        assert_eq!(batches(&order, 4, false).len(), 3);
        assert_eq!(batches(&order, 4, true).len(), 2);
    }
}
