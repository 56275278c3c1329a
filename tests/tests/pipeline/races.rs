//! Races between a running job and what a client does meanwhile (issue 13, defects 3 and 4):
//! a delete must stop the document's running job for good, and the last submission of a
//! document must be the one that stays visible.

use std::time::Duration;

use millrace_e2e::{Stack, StackOptions, long_text};

async fn slow_stack() -> Stack {
    Stack::start(StackOptions::slow_pipeline()).await.unwrap()
}

#[tokio::test]
async fn deleting_a_document_stops_its_running_job_and_it_stays_deleted() {
    let stack = slow_stack().await;
    let first = stack.ingest("deleted-doc", "The first version: a short note about weirs.").await;
    stack.wait_for_job(&first, Duration::from_secs(60)).await.unwrap();
    let running = stack.ingest("deleted-doc", &long_text("flume", 20)).await;
    stack.wait_until_progress(&running, 1).await;

    let (status, body) = stack.delete("/v1/documents/deleted-doc").await;
    assert_eq!(status, 204, "{body}");
    let job = stack.wait_for_job(&running, Duration::from_secs(60)).await.unwrap();
    assert_eq!(job["status"], "cancelled", "{job}");
    assert_eq!(job["error"]["message"], "the document was deleted", "{job}");
    // Whatever the job's stages were doing when the delete came, nothing of it comes back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(stack.get("/v1/documents/deleted-doc").await.0, 404);
    assert!(stack.stored_chunks("deleted-doc").await.is_empty());
    assert!(stack.search("flume marker item1", 5).await.is_empty());

    // Submitted again after the delete, it is a document again.
    let again = stack.ingest("deleted-doc", "Submitted again after the delete: sluice gates.").await;
    let job = stack.wait_for_job(&again, Duration::from_secs(60)).await.unwrap();
    assert_eq!(job["status"], "completed", "{job}");
    let (status, document) = stack.get("/v1/documents/deleted-doc").await;
    assert_eq!((status, document["version"].as_u64()), (200, job["version"].as_u64()), "{document}");
    // A delete with nothing visible and nothing running is a 404.
    assert_eq!(stack.delete("/v1/documents/never-submitted").await.0, 404);
}

#[tokio::test]
async fn the_last_submission_wins_even_when_it_repeats_the_visible_version() {
    let stack = slow_stack().await;
    let a_text = "Version A: the millrace feeds the wheel.";
    let a = stack.ingest("last-wins", a_text).await;
    let a_job = stack.wait_for_job(&a, Duration::from_secs(60)).await.unwrap();
    let a_hash = a_job["content_hash"].as_str().unwrap().to_owned();

    // B is still running when A comes again: A may not complete at once as unchanged.
    let b = stack.ingest("last-wins", &long_text("tailrace", 12)).await;
    stack.wait_until_progress(&b, 1).await;
    let again = stack.ingest("last-wins", a_text).await;
    let again_job = stack.job(&again).await;
    assert_ne!(again_job["unchanged"], true, "A again completed at once while B ran: {again_job}");

    let b_job = stack.wait_for_job(&b, Duration::from_secs(120)).await.unwrap();
    let again_job = stack.wait_for_job(&again, Duration::from_secs(120)).await.unwrap();
    assert_eq!((b_job["status"].as_str(), again_job["status"].as_str()), (Some("completed"), Some("completed")));
    let (_, document) = stack.get("/v1/documents/last-wins").await;
    assert_eq!(document["content_hash"], a_hash.as_str(), "B stayed visible although A came last: {document}");
    assert_eq!(document["version"], again_job["version"], "{document}");
}
