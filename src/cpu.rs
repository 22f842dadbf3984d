//! CPU-bound work on a batch, taken off the async runtime and spread over the cores.
//!
//! A relay batch holds up to 256 messages, and the receiver checks every envelope (its
//! path under the batch signature, its JSON, the policy, consent — and, from a sender
//! before batch signatures, an ECDSA signature of about 75 µs each); the sender verifies
//! each distinct signed receipt statement (one per batch, normally). Done in a loop on an async task,
//! a batch is ~20 ms during which one core works and the other waits. The items are
//! independent, so they are checked in one slice per core on tokio's blocking pool, and
//! the results come back in the items' order.

use std::sync::Arc;

/// Below this many items per slice, spreading costs more than it saves.
const MIN_SLICE: usize = 16;

/// Applies `f` to every item, on the blocking pool, in as many slices as there are
/// cores; returns the results in the order of `items`. Fails only if `f` panicked.
pub async fn map_batch<T, R, F>(items: Vec<T>, f: F) -> Result<Vec<R>, tokio::task::JoinError>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(T) -> R + Send + Sync + 'static,
{
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let slice_len = items.len().div_ceil(cores).max(MIN_SLICE);
    let total = items.len();
    let f = Arc::new(f);
    let mut slices = Vec::new();
    let mut rest = items.into_iter().peekable();
    while rest.peek().is_some() {
        let slice: Vec<T> = rest.by_ref().take(slice_len).collect();
        let f = f.clone();
        slices.push(tokio::task::spawn_blocking(move || {
            slice.into_iter().map(|item| f(item)).collect::<Vec<R>>()
        }));
    }
    let mut results = Vec::with_capacity(total);
    for slice in slices {
        results.extend(slice.await?);
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn results_keep_the_order_of_the_items() {
        for n in [0, 1, 15, 16, 17, 100, 256] {
            let items: Vec<u32> = (0..n).collect();
            let doubled = map_batch(items, |i| i * 2).await.unwrap();
            assert_eq!(doubled, (0..n).map(|i| i * 2).collect::<Vec<_>>());
        }
    }
}
