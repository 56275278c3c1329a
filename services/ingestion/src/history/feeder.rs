//! The feeder: submits the items of runs as admission allows, so that a run larger than the
//! queue bound (`MILLRACE_MAX_QUEUED_JOBS`) loses nothing. Every replica runs one; each claims
//! items with `FOR UPDATE SKIP LOCKED`, so two never submit the same item. An item goes through
//! the same checks and submit path as `POST /v1/ingest`, as the key that created the run; one
//! that fails them (a bad item, a URL the address rules refuse) is `refused` with the reason.
//! Either way the run's `pending` goes down by one (`JobStore::run_progress`).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use millrace_auth::{Caller, Scope};
use millrace_common::{ApiError, ErrorCode};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::runs::{ClaimedItem, ItemOutcome, RunRow};
use super::store::{HistoryError, HistoryStore};
use crate::api::ingest::IngestRequest;
use crate::core::Core;

/// Items claimed at once from one run.
const FEED_BATCH: u64 = 200;
/// Items of one claim submitted at once.
const SUBMIT_CONCURRENCY: usize = 8;
/// How long the feeder rests when there was nothing to submit (or no room).
const IDLE: Duration = Duration::from_millis(250);

/// Feeds runs until `stop`.
pub async fn run(core: Arc<Core>, history: HistoryStore, stop: CancellationToken) {
    if !history.is_configured() {
        return;
    }
    loop {
        let fed = match feed_once(&core, &history).await {
            Ok(fed) => fed,
            Err(err) => {
                if err.is_outage() {
                    tracing::debug!(error = %err, "feeder: history unavailable");
                } else {
                    tracing::warn!(error = %err, "feeder: history query failed");
                }
                0
            }
        };
        let pause = if fed > 0 { Duration::ZERO } else { IDLE };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// One pass over the runs with items to submit; answers how many items were handled.
pub async fn feed_once(core: &Core, history: &HistoryStore) -> Result<usize, HistoryError> {
    let mut total = 0;
    for run in history.runs_to_feed().await? {
        let room = match core.capacity(&run.tenant).await {
            Ok(capacity) => capacity.free_jobs.min(capacity.free_tenant_jobs).min(FEED_BATCH),
            Err(_) => 0,
        };
        if room == 0 {
            continue;
        }
        let caller = run_caller(&run);
        let handled =
            history.feed(&run.run_id, room as usize, |items| submit_items(core, &caller, &run, items)).await?;
        if handled > 0 {
            if let Err(err) = core.jobs().run_progress(&run.run_id, -(handled as i64)).await {
                tracing::error!(run_id = %run.run_id, handled, error = %err, "could not count submitted items in the run");
            }
            tracing::debug!(run_id = %run.run_id, handled, "run items submitted");
        }
        total += handled;
    }
    Ok(total)
}

/// The caller a run's items are submitted as: the key that created it, for ingest only.
fn run_caller(run: &RunRow) -> Caller {
    Caller {
        key_id: run.key_id.clone(),
        tenant: run.tenant.clone(),
        scopes: vec![Scope::Ingest],
        collections: run.key_collections.clone(),
        rpm: None,
        tpm: None,
        daily_budget_usd: None,
    }
}

/// Submits claimed items, a few at once (each waits on Redis, storage and, for a URL, DNS);
/// one that finds no room (or a service down) is left out of the outcomes, so it stays pending
/// for the next pass.
async fn submit_items(core: &Core, caller: &Caller, run: &RunRow, items: Vec<ClaimedItem>) -> Vec<(i64, ItemOutcome)> {
    futures::stream::iter(items)
        .map(|item| async move {
            let submission = serde_json::from_value::<IngestRequest>(with_collection(item.spec, &run.collection))
                .map_err(|err| ApiError::bad_request(format!("the item has the wrong shape: {err}")))
                .and_then(IngestRequest::into_submission);
            let result = match submission {
                Ok(submission) => core.submit_in_run(caller, submission, &run.run_id).await,
                Err(err) => Err(err),
            };
            match result {
                Ok(accepted) => Some((
                    item.id,
                    ItemOutcome::Submitted { job_id: accepted.job_id, document_id: accepted.document_id },
                )),
                Err(err) if is_transient(&err) => {
                    tracing::debug!(run_id = %run.run_id, error = %err.message, "run item waits for room");
                    None
                }
                Err(err) => Some((item.id, ItemOutcome::Refused { reason: err.message })),
            }
        })
        .buffered(SUBMIT_CONCURRENCY)
        .filter_map(std::future::ready)
        .collect()
        .await
}

/// An item without a collection goes to its run's.
fn with_collection(mut spec: Value, collection: &str) -> Value {
    if let Value::Object(fields) = &mut spec
        && !fields.contains_key("collection")
    {
        fields.insert("collection".to_owned(), Value::String(collection.to_owned()));
    }
    spec
}

/// No room, a budget spent or a service down: the item waits rather than being refused.
fn is_transient(err: &ApiError) -> bool {
    matches!(
        err.code,
        ErrorCode::Unavailable | ErrorCode::RateLimited | ErrorCode::DeadlineExceeded | ErrorCode::Internal
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_item_takes_its_runs_collection_unless_it_names_one() {
        assert_eq!(with_collection(json!({"content": "x"}), "web")["collection"], "web");
        assert_eq!(with_collection(json!({"content": "x", "collection": "hr"}), "web")["collection"], "hr");
    }

    #[test]
    fn only_room_and_outages_make_an_item_wait() {
        assert!(is_transient(&ApiError::unavailable("queue full")));
        assert!(!is_transient(&ApiError::invalid("`url` is refused")));
        assert!(!is_transient(&ApiError::permission_denied("collection")));
    }
}
