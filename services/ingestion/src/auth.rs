//! Which scope each route of this service needs: one table for HTTP and gRPC, applied by the
//! door (`millrace_auth::door`) before any handler runs, so that handlers need not check.

use axum::http::Method;
use millrace_auth::{Access, Scope};

/// The access a route needs. Anything not named here needs `admin`: a new route is closed
/// until it is given its scope.
pub fn rules(method: &Method, path: &str) -> Access {
    use Access::{Needs, Public};
    use Scope::{Admin, Delete, Ingest, Read, Search};
    match (method.as_str(), path) {
        // HTTP: health, readiness and metrics are served outside the door; this is the rest.
        ("GET", "/openapi.json") => Public,
        // The web console's page and assets: they hold no data; the calls they make carry a key.
        ("GET", "/ui" | "/ui/" | "/ui/app.js" | "/ui/app.css" | "/ui/config.json") => Public,
        ("POST", "/v1/ingest" | "/v1/ingest/batch") => Needs(Ingest),
        ("DELETE", "/v1/jobs/{id}") => Needs(Ingest),
        ("POST", "/v1/runs" | "/v1/runs/{id}/retry-failed") | ("DELETE", "/v1/runs/{id}") => Needs(Ingest),
        ("GET", "/v1/runs" | "/v1/runs/{id}" | "/v1/runs/{id}/items" | "/v1/runs/{id}/report.csv") => Needs(Read),
        (
            "GET",
            "/v1/jobs"
            | "/v1/jobs/{id}"
            | "/v1/jobs/{id}/events"
            | "/v1/documents"
            | "/v1/documents/{id}"
            | "/v1/documents/{id}/chunks",
        ) => Needs(Read),
        ("GET", "/v1/runs/{id}/webhooks") => Needs(Read),
        ("POST", "/v1/search") => Needs(Search),
        ("DELETE", "/v1/documents/{id}") => Needs(Delete),
        // gRPC (every call is a POST). Health and reflection are served outside the door.
        (_, "/millrace.v1.Ingestion/Submit" | "/millrace.v1.Ingestion/CancelJob") => Needs(Ingest),
        (
            _,
            "/millrace.v1.Ingestion/GetJob"
            | "/millrace.v1.Ingestion/ListJobs"
            | "/millrace.v1.Ingestion/WatchJob"
            | "/millrace.v1.Ingestion/ListDocuments"
            | "/millrace.v1.Ingestion/ListChunks",
        ) => Needs(Read),
        (_, "/millrace.v1.Ingestion/Search") => Needs(Search),
        (_, "/millrace.v1.Ingestion/DeleteDocument") => Needs(Delete),
        // Stats, limits, dead letters, keys, audit, the Admin service and anything unknown.
        _ => Needs(Admin),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_routes_are_admin_only() {
        assert_eq!(rules(&Method::GET, "/v1/something-new"), Access::Needs(Scope::Admin));
        assert_eq!(rules(&Method::POST, "/millrace.v1.Ingestion/NewMethod"), Access::Needs(Scope::Admin));
        assert_eq!(rules(&Method::POST, "/openapi.json"), Access::Needs(Scope::Admin));
        assert_eq!(rules(&Method::GET, "/openapi.json"), Access::Public);
        assert_eq!(rules(&Method::GET, "/ui/"), Access::Public);
        assert_eq!(rules(&Method::POST, "/ui/"), Access::Needs(Scope::Admin));
    }
}
