//! The caller a key stands for. Ingestion builds one per request from the key and hands it to
//! every operation: the tenant comes from here and nowhere else.

use millrace_common::ApiError;
use serde::Serialize;

use crate::Scope;

/// The tenant of the bootstrap admin key's own documents (and of a key created without one).
pub const DEFAULT_TENANT: &str = "default";
/// The collection of a document submitted without one.
pub const DEFAULT_COLLECTION: &str = "default";

/// Whether `text` may name a tenant or a collection: 1 to 64 of `A-Z a-z 0-9 . _ -`.
pub fn is_valid_name(text: &str) -> bool {
    (1..=64).contains(&text.len()) && text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Caller {
    /// The key's id (never its secret); `admin` for the bootstrap `MILLRACE_ADMIN_KEY`.
    pub key_id: String,
    pub tenant: String,
    pub scopes: Vec<Scope>,
    /// The collections the key may read and write; `None` means all of its tenant's.
    pub collections: Option<Vec<String>>,
    /// Requests per minute at the door; `None` means no per-key limit.
    pub rpm: Option<u32>,
    /// LLM tokens per minute on the llm-gateway; `None` means no per-key limit.
    pub tpm: Option<u32>,
    /// Spending limit per UTC day on the llm-gateway; `None` means none.
    pub daily_budget_usd: Option<f64>,
}

impl Caller {
    /// The bootstrap admin (`MILLRACE_ADMIN_KEY`): every API scope, the default tenant, no limits.
    pub fn bootstrap_admin() -> Self {
        Self {
            key_id: "admin".to_owned(),
            tenant: DEFAULT_TENANT.to_owned(),
            scopes: vec![Scope::Admin],
            collections: None,
            rpm: None,
            tpm: None,
            daily_budget_usd: None,
        }
    }

    pub fn has(&self, needed: Scope) -> bool {
        self.scopes.iter().any(|held| held.grants(needed))
    }

    pub fn is_admin(&self) -> bool {
        self.has(Scope::Admin)
    }

    /// 403 unless the key holds `needed`.
    pub fn require(&self, needed: Scope) -> Result<(), ApiError> {
        if self.has(needed) {
            Ok(())
        } else {
            Err(ApiError::permission_denied(format!("this key lacks the '{needed}' scope")))
        }
    }

    /// Whether the key may read and write `collection`.
    pub fn may_use(&self, collection: &str) -> bool {
        self.collections.as_ref().is_none_or(|allowed| allowed.iter().any(|c| c == collection))
    }

    /// Whether an object of `tenant` is visible to this caller: its own tenant's, or any for admin.
    pub fn sees_tenant(&self, tenant: &str) -> bool {
        self.tenant == tenant || self.is_admin()
    }
}

#[cfg(test)]
mod tests {
    use millrace_common::ErrorCode;

    use super::*;

    fn reader(collections: Option<Vec<String>>) -> Caller {
        Caller {
            key_id: "k1".into(),
            tenant: "acme".into(),
            scopes: vec![Scope::Read],
            collections,
            ..Caller::bootstrap_admin()
        }
    }

    #[test]
    fn a_missing_scope_is_403() {
        let caller = reader(None);
        assert!(caller.require(Scope::Read).is_ok());
        let err = caller.require(Scope::Delete).err().map(|err| err.code);
        assert_eq!(err, Some(ErrorCode::PermissionDenied));
        assert!(Caller::bootstrap_admin().require(Scope::Delete).is_ok());
    }

    #[test]
    fn collections_limit_only_keys_that_name_them() {
        assert!(reader(None).may_use("anything"));
        let limited = reader(Some(vec!["hr".into()]));
        assert!(limited.may_use("hr"));
        assert!(!limited.may_use("default"));
    }

    #[test]
    fn names_are_short_and_plain() {
        assert!(is_valid_name("acme-corp_2.eu"));
        assert!(
            !is_valid_name("") && !is_valid_name("a/b") && !is_valid_name("a b") && !is_valid_name(&"x".repeat(65))
        );
    }

    #[test]
    fn only_admin_sees_other_tenants() {
        assert!(reader(None).sees_tenant("acme"));
        assert!(!reader(None).sees_tenant("globex"));
        assert!(Caller::bootstrap_admin().sees_tenant("globex"));
    }
}
