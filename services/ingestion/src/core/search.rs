//! Search: the query embedded by the embeddings service, the nearest chunks found by storage
//! among the caller's tenant's documents, in the collections it names or may use.

use millrace_auth::Caller;
use millrace_common::ApiError;
use millrace_proto::v1::{EmbedRequest, SearchFilter, VectorSearchRequest};
use serde::Serialize;

use super::{Core, downstream, json_object};
use crate::validate::ValidSearch;

#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    pub document_id: String,
    pub collection: String,
    pub chunk_index: u32,
    pub text: String,
    pub score: f32,
    pub metadata: serde_json::Value,
}

impl Core {
    /// Embeds the query through the embeddings service and searches through the storage service,
    /// which filters by tenant and collection inside its index scan. Naming a collection the key
    /// may not use is a 403 (before anything is embedded).
    pub async fn search(&self, caller: &Caller, search: ValidSearch) -> Result<Vec<Hit>, ApiError> {
        let collections = searched_collections(caller, search.collections)?;
        let embedded = self
            .embeddings
            .clone()
            .embed(EmbedRequest { texts: vec![search.query], job_id: String::new() })
            .await
            .map_err(|status| downstream("embeddings", status))?
            .into_inner();
        let vector = embedded
            .vectors
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::internal("the embeddings service returned no vector for the query"))?;
        let metadata_json = match &search.metadata {
            serde_json::Value::Object(map) if map.is_empty() => String::new(),
            other => other.to_string(),
        };
        let response = self
            .storage
            .clone()
            .search(VectorSearchRequest {
                tenant_id: caller.tenant.clone(),
                vector: vector.values,
                top_k: search.top_k,
                filter: Some(SearchFilter { document_id: search.document_id, metadata_json, ..Default::default() }),
                collections,
                ..Default::default()
            })
            .await
            .map_err(|status| downstream("storage", status))?
            .into_inner();
        Ok(response
            .results
            .into_iter()
            .map(|hit| Hit {
                document_id: hit.document_id,
                collection: hit.collection,
                chunk_index: hit.chunk_index,
                text: hit.text,
                score: hit.score,
                metadata: json_object(&hit.metadata_json),
            })
            .collect())
    }
}

/// The collections a search covers: those named, each of which the key must be allowed (403
/// otherwise); none named, the key's own list, or every collection (empty) for a key not limited.
fn searched_collections(caller: &Caller, named: Vec<String>) -> Result<Vec<String>, ApiError> {
    if named.is_empty() {
        return match &caller.collections {
            // An empty list would mean "every collection" to storage.
            Some(allowed) if allowed.is_empty() => Err(ApiError::permission_denied("this key may use no collection")),
            allowed => Ok(allowed.clone().unwrap_or_default()),
        };
    }
    if let Some(refused) = named.iter().find(|collection| !caller.may_use(collection)) {
        return Err(ApiError::permission_denied(format!("this key may not use collection {refused:?}")));
    }
    Ok(named)
}

#[cfg(test)]
mod tests {
    use millrace_common::ErrorCode;

    use super::*;

    fn key(collections: Option<&[&str]>) -> Caller {
        Caller {
            key_id: "k".into(),
            tenant: "acme".into(),
            scopes: vec![millrace_auth::Scope::Search],
            collections: collections.map(|list| list.iter().map(|c| (*c).to_owned()).collect()),
            ..Caller::bootstrap_admin()
        }
    }

    #[test]
    fn a_search_covers_what_the_key_may_use_and_nothing_else() {
        let owned = |list: &[&str]| list.iter().map(|c| (*c).to_owned()).collect::<Vec<_>>();
        assert_eq!(searched_collections(&key(None), vec![]).unwrap(), Vec::<String>::new(), "every collection");
        assert_eq!(searched_collections(&key(None), owned(&["x"])).unwrap(), ["x"]);
        let limited = key(Some(&["hr", "eng"]));
        assert_eq!(searched_collections(&limited, vec![]).unwrap(), ["hr", "eng"]);
        assert_eq!(searched_collections(&limited, owned(&["eng"])).unwrap(), ["eng"]);
        let err = searched_collections(&limited, owned(&["eng", "legal"])).unwrap_err();
        assert_eq!(err.code, ErrorCode::PermissionDenied);
        let nothing = key(Some(&[]));
        assert_eq!(searched_collections(&nothing, vec![]).unwrap_err().code, ErrorCode::PermissionDenied);
    }
}
