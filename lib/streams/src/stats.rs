//! Queue length, lag and pending counts, for the Admin API and autoscaling signals.

use millrace_proto::QueueStats;
use redis::AsyncCommands;
use redis::streams::StreamInfoGroupsReply;

pub async fn queue_stats(
    conn: &mut deadpool_redis::Connection,
    stream: &str,
    group: &str,
    dead_letter_stream: &str,
) -> redis::RedisResult<QueueStats> {
    let length: u64 = conn.xlen(stream).await?;
    let dead_letters: u64 = conn.xlen(dead_letter_stream).await?;
    // XINFO GROUPS fails on a stream that does not exist yet: report it empty.
    let groups: StreamInfoGroupsReply = conn.xinfo_groups(stream).await.unwrap_or_default();
    let (lag, pending) = groups
        .groups
        .iter()
        .find(|g| g.name == group)
        .map(|g| (g.lag.unwrap_or(0) as u64, g.pending as u64))
        .unwrap_or((length, 0));
    Ok(QueueStats { stream: stream.to_owned(), group: group.to_owned(), length, lag, pending, dead_letters })
}
