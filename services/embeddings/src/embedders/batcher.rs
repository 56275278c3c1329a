//! Dynamic batching for a CPU model: texts from concurrent callers (several stream batches at
//! once, query embeddings over gRPC) are queued and run together in one forward pass, because a
//! pass over 32 texts costs far less than 32 passes over one. A pass starts when it holds
//! `max_batch` texts or when its oldest text has waited `max_wait`.
//!
//! The model runs on one dedicated thread, never on the async runtime (a pass takes tens to
//! hundreds of milliseconds of pure CPU, and the model parallelises the pass itself). Every
//! caller is answered: with its vectors, with the error of its pass, or with an error when the
//! thread is gone; a panicking pass is caught and answered like an error.

use std::collections::VecDeque;
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use millrace_common::HandlerError;

/// What the batcher runs: one forward pass over a batch of texts, one vector per text.
pub trait BatchModel: Send + 'static {
    fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, String>;
}

#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    /// Texts per forward pass, at most.
    pub max_batch: usize,
    /// How long the oldest queued text may wait for company before its pass starts.
    pub max_wait: Duration,
}

type Reply = oneshot::Sender<Result<Vec<Vec<f32>>, HandlerError>>;

struct Request {
    texts: Vec<String>,
    arrived: Instant,
    reply: Reply,
}

/// A request being served; a large one spans several passes.
struct Job {
    texts: Vec<String>,
    arrived: Instant,
    vectors: Vec<Vec<f32>>,
    reply: Reply,
}

impl Job {
    fn remaining(&self) -> usize {
        self.texts.len() - self.vectors.len()
    }
}

pub struct Batcher {
    queue: mpsc::Sender<Request>,
    passes: Arc<AtomicU64>,
}

impl Batcher {
    /// Starts the model thread. The thread ends when the batcher is dropped and the queue is
    /// drained.
    pub fn start<M: BatchModel>(model: M, config: BatchConfig) -> std::io::Result<Self> {
        let (queue, requests) = mpsc::channel();
        let passes = Arc::new(AtomicU64::new(0));
        let worker = Worker {
            model,
            config: BatchConfig { max_batch: config.max_batch.max(1), max_wait: config.max_wait },
            requests,
            jobs: VecDeque::new(),
            passes: passes.clone(),
        };
        std::thread::Builder::new().name("embed-batcher".to_owned()).spawn(move || worker.run())?;
        Ok(Self { queue, passes })
    }

    /// Forward passes run so far (tests and metrics).
    pub fn passes(&self) -> u64 {
        self.passes.load(Ordering::Relaxed)
    }

    pub async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, HandlerError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        let request = Request { texts: texts.to_vec(), arrived: Instant::now(), reply };
        self.queue.send(request).map_err(|_| stopped())?;
        // The sender is dropped without an answer only if the thread died outside a pass.
        answer.await.map_err(|_| stopped())?
    }
}

fn stopped() -> HandlerError {
    HandlerError::Retry("the embedding model thread has stopped".to_owned())
}

struct Worker<M> {
    model: M,
    config: BatchConfig,
    requests: mpsc::Receiver<Request>,
    jobs: VecDeque<Job>,
    passes: Arc<AtomicU64>,
}

impl<M: BatchModel> Worker<M> {
    fn run(mut self) {
        let mut open = true;
        while open || !self.jobs.is_empty() {
            if self.jobs.is_empty() {
                match self.requests.recv() {
                    Ok(request) => self.accept(request),
                    Err(_) => return,
                }
            }
            open = self.gather();
            self.pass();
        }
    }

    fn accept(&mut self, request: Request) {
        let Request { texts, arrived, reply } = request;
        self.jobs.push_back(Job { vectors: Vec::with_capacity(texts.len()), texts, arrived, reply });
    }

    fn queued(&self) -> usize {
        self.jobs.iter().map(Job::remaining).sum()
    }

    /// Takes what is queued, then waits for more until the pass is full or the oldest text has
    /// waited long enough. Returns false once every `Batcher` is gone.
    fn gather(&mut self) -> bool {
        loop {
            match self.requests.try_recv() {
                Ok(request) => self.accept(request),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => return false,
            }
        }
        let Some(oldest) = self.jobs.front().map(|job| job.arrived) else { return true };
        let deadline = oldest + self.config.max_wait;
        while self.queued() < self.config.max_batch {
            let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else { break };
            match self.requests.recv_timeout(left) {
                Ok(request) => self.accept(request),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return false,
            }
        }
        true
    }

    /// Runs one pass over the first `max_batch` queued texts and answers the jobs it finished.
    fn pass(&mut self) {
        let mut budget = self.config.max_batch;
        let mut parts: Vec<(usize, Range<usize>)> = Vec::new();
        for (index, job) in self.jobs.iter().enumerate() {
            if budget == 0 {
                break;
            }
            let start = job.vectors.len();
            let take = job.remaining().min(budget);
            budget -= take;
            parts.push((index, start..start + take));
        }
        if parts.is_empty() {
            return;
        }
        let texts: Vec<String> =
            parts.iter().flat_map(|(index, range)| self.jobs[*index].texts[range.clone()].iter().cloned()).collect();

        let mut failed: Vec<(usize, String)> = Vec::new();
        match self.run_model(&texts) {
            Ok(vectors) => {
                let mut vectors = vectors.into_iter();
                for (index, range) in &parts {
                    self.jobs[*index].vectors.extend(vectors.by_ref().take(range.len()));
                }
            }
            // One bad text must not fail the strangers it shared a pass with: each job's part
            // is run again alone, so only the job that holds the culprit gets the error.
            Err(reason) if parts.len() > 1 => {
                for (index, range) in &parts {
                    let job = &self.jobs[*index];
                    match self.run_model(&job.texts[range.clone()]) {
                        Ok(vectors) => self.jobs[*index].vectors.extend(vectors),
                        Err(own) => failed.push((*index, own)),
                    }
                }
                tracing::warn!(error = %reason, jobs = parts.len(), failed = failed.len(), "embedding pass failed; parts rerun alone");
            }
            Err(reason) => failed.push((parts[0].0, reason)),
        }

        // Answer failed jobs (back to front so the indices stay valid), then the finished ones
        // at the front of the queue.
        for (index, reason) in failed.into_iter().rev() {
            if let Some(job) = self.jobs.remove(index) {
                let _ = job.reply.send(Err(HandlerError::Fatal(format!("embedding model: {reason}"))));
            }
        }
        while self.jobs.front().is_some_and(|job| job.remaining() == 0) {
            if let Some(job) = self.jobs.pop_front() {
                // The caller may have given up (its future dropped); nothing to do then.
                let _ = job.reply.send(Ok(job.vectors));
            }
        }
    }

    fn run_model(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, String> {
        self.passes.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        // The model is only read during a pass, so a panic cannot leave it half-updated.
        let result = match catch_unwind(AssertUnwindSafe(|| self.model.embed_batch(texts))) {
            Ok(result) => result,
            Err(payload) => Err(panic_message(payload.as_ref())),
        };
        metrics::histogram!(crate::metrics::PASS_DURATION).record(started.elapsed().as_secs_f64());
        metrics::histogram!(crate::metrics::PASS_TEXTS).record(texts.len() as f64);
        let vectors = result?;
        if vectors.len() != texts.len() {
            return Err(format!("{} vectors for {} texts", vectors.len(), texts.len()));
        }
        Ok(vectors)
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let detail = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned());
    format!("panicked: {detail}")
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A model that records every pass and returns `[len, pass]` per text; a text "panic" makes
    /// it panic and a text "fail" makes it fail.
    #[derive(Clone, Default)]
    struct Recorder {
        passes: Arc<Mutex<Vec<Vec<String>>>>,
        delay: Duration,
    }

    impl BatchModel for Recorder {
        fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, String> {
            std::thread::sleep(self.delay);
            let mut passes = self.passes.lock().unwrap();
            passes.push(texts.to_vec());
            if texts.iter().any(|t| t == "panic") {
                drop(passes);
                panic!("boom");
            }
            if texts.iter().any(|t| t == "fail") {
                return Err("bad text".to_owned());
            }
            Ok(texts.iter().map(|t| vec![t.len() as f32, passes.len() as f32]).collect())
        }
    }

    fn texts(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    fn start(model: &Recorder, max_batch: usize, max_wait_ms: u64) -> Arc<Batcher> {
        let config = BatchConfig { max_batch, max_wait: Duration::from_millis(max_wait_ms) };
        Arc::new(Batcher::start(model.clone(), config).unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_share_one_pass() {
        let model = Recorder::default();
        let batcher = start(&model, 32, 200);
        let calls: Vec<_> = (0..10)
            .map(|i| {
                let batcher = batcher.clone();
                tokio::spawn(async move { batcher.embed(&[format!("text {i}"), "x".repeat(i)]).await })
            })
            .collect();
        let results = futures_join(calls).await;
        for (i, vectors) in results.into_iter().enumerate() {
            let vectors = vectors.unwrap();
            assert_eq!(vectors.len(), 2);
            assert_eq!(vectors[0][0], format!("text {i}").len() as f32, "answers stay in order per caller");
            assert_eq!(vectors[1][0], i as f32);
        }
        assert_eq!(batcher.passes(), 1, "passes: {:?}", model.passes.lock().unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pass_holds_at_most_max_batch_texts() {
        let model = Recorder::default();
        let batcher = start(&model, 4, 100);
        let big: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        let vectors = batcher.embed(&big).await.unwrap();
        assert_eq!(vectors.iter().map(|v| v[0]).collect::<Vec<_>>(), vec![1.0; 10]);
        let sizes: Vec<usize> = model.passes.lock().unwrap().iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![4, 4, 2]);
    }

    #[tokio::test]
    async fn a_lone_request_waits_no_longer_than_max_wait() {
        let model = Recorder::default();
        let batcher = start(&model, 32, 30);
        let started = Instant::now();
        batcher.embed(&texts(&["alone"])).await.unwrap();
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(30) && took < Duration::from_millis(500), "took {took:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_pass_answers_every_caller_and_the_thread_lives_on() {
        let model = Recorder::default();
        let batcher = start(&model, 32, 100);
        let bad = {
            let batcher = batcher.clone();
            tokio::spawn(async move { batcher.embed(&texts(&["panic"])).await })
        };
        let good = {
            let batcher = batcher.clone();
            tokio::spawn(async move { batcher.embed(&texts(&["fine", "also fine"])).await })
        };
        let bad = tokio::time::timeout(Duration::from_secs(5), bad).await.unwrap().unwrap();
        let good = tokio::time::timeout(Duration::from_secs(5), good).await.unwrap().unwrap();
        let err = bad.unwrap_err();
        assert!(matches!(&err, HandlerError::Fatal(m) if m.contains("panicked: boom")), "{err:?}");
        // The stranger that shared the panicking pass was rerun alone and got its vectors.
        assert_eq!(good.unwrap().len(), 2);
        assert_eq!(batcher.embed(&texts(&["after"])).await.unwrap().len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_pass_fails_only_the_culprit() {
        let model = Recorder::default();
        let batcher = start(&model, 32, 100);
        let calls = ["fail", "ok", "fine"].map(|t| {
            let batcher = batcher.clone();
            tokio::spawn(async move { batcher.embed(&texts(&[t])).await })
        });
        let results = futures_join(calls).await;
        assert!(matches!(&results[0], Err(HandlerError::Fatal(m)) if m.contains("bad text")), "{:?}", results[0]);
        assert!(results[1].is_ok() && results[2].is_ok());
    }

    #[tokio::test]
    async fn a_caller_that_gives_up_does_not_stall_the_others() {
        let model = Recorder { delay: Duration::from_millis(50), ..Recorder::default() };
        let batcher = start(&model, 32, 0);
        let gave_up = tokio::time::timeout(Duration::from_millis(5), batcher.embed(&texts(&["impatient"]))).await;
        assert!(gave_up.is_err());
        let vectors = tokio::time::timeout(Duration::from_secs(5), batcher.embed(&texts(&["patient"]))).await.unwrap();
        assert_eq!(vectors.unwrap().len(), 1);
    }

    async fn futures_join<T: Send + 'static>(handles: impl IntoIterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
        let mut out = Vec::new();
        for handle in handles {
            out.push(tokio::time::timeout(Duration::from_secs(10), handle).await.unwrap().unwrap());
        }
        out
    }
}
