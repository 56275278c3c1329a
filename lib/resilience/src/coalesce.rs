//! Write coalescing for bookkeeping that follows a call (settling a quota reservation, adding
//! up cost): each caller queues its item and waits until it is written, and one task writes
//! whatever queued up meanwhile in a single call. Idle, an item is written alone at once; under
//! load, the items of many concurrent calls share one round trip instead of one each.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, oneshot};

type WriteFn<T> = dyn Fn(Vec<T>) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync;
/// A queued item and who waits for its batch's outcome.
type Queued<T> = (T, oneshot::Sender<Result<(), String>>);

pub struct Coalescer<T> {
    queue: OnceLock<mpsc::UnboundedSender<Queued<T>>>,
    write: Arc<WriteFn<T>>,
    max_batch: usize,
}

impl<T: Send + 'static> Coalescer<T> {
    /// `write` gets at most `max_batch` items at a time, in the order they were queued; its
    /// error goes to every caller of the batch.
    pub fn new<F, Fut>(max_batch: usize, write: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        Self {
            queue: OnceLock::new(),
            write: Arc::new(move |items| Box::pin(write(items))),
            max_batch: max_batch.max(1),
        }
    }

    /// Queues `item` and waits for its batch to be written. The writer task starts on first use
    /// (so a coalescer can be built outside a runtime) and ends when the coalescer is dropped.
    pub async fn write(&self, item: T) -> Result<(), String> {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(run(rx, self.write.clone(), self.max_batch));
            tx
        });
        let (done, written) = oneshot::channel();
        queue.send((item, done)).map_err(|_| "the writer has stopped".to_owned())?;
        written.await.unwrap_or_else(|_| Err("the writer has stopped".to_owned()))
    }
}

async fn run<T>(mut queue: mpsc::UnboundedReceiver<Queued<T>>, write: Arc<WriteFn<T>>, max_batch: usize) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match queue.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let (items, waiters): (Vec<T>, Vec<_>) = batch.into_iter().unzip();
        let result = write(items).await;
        for waiter in waiters {
            let _ = waiter.send(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn concurrent_writes_share_batches_and_every_caller_hears_its_result() {
        let batches = Arc::new(Mutex::new(Vec::<Vec<u32>>::new()));
        let seen = batches.clone();
        let coalescer = Arc::new(Coalescer::new(4, move |items: Vec<u32>| {
            let seen = seen.clone();
            async move {
                // A slow write, so that the next items queue up behind it.
                tokio::time::sleep(Duration::from_millis(20)).await;
                let failed = items.contains(&7);
                seen.lock().unwrap().push(items);
                if failed { Err("seven".to_owned()) } else { Ok(()) }
            }
        }));
        let calls: Vec<_> = (0..10)
            .map(|i| {
                let coalescer = coalescer.clone();
                tokio::spawn(async move { (i, coalescer.write(i).await) })
            })
            .collect();
        let mut results = Vec::new();
        for call in calls {
            results.push(call.await.unwrap());
        }
        let batches = batches.lock().unwrap().clone();
        let mut written: Vec<u32> = batches.iter().flatten().copied().collect();
        written.sort_unstable();
        assert_eq!(written, (0..10).collect::<Vec<_>>(), "every item written once: {batches:?}");
        assert!(batches.len() < 10 && batches.iter().all(|b| b.len() <= 4), "{batches:?}");
        let failed_batch = batches.iter().find(|b| b.contains(&7)).unwrap();
        for (i, result) in results {
            assert_eq!(result.is_err(), failed_batch.contains(&i), "item {i}: {result:?}");
        }
    }

    #[tokio::test]
    async fn a_lone_write_goes_at_once() {
        let coalescer = Coalescer::new(8, |items: Vec<u8>| async move {
            assert_eq!(items, vec![1]);
            Ok(())
        });
        tokio::time::timeout(Duration::from_millis(500), coalescer.write(1)).await.unwrap().unwrap();
    }
}
