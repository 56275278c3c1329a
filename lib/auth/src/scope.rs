//! What a key may do. `admin` holds every API scope (not `llm`: spending the LLM key is granted
//! on its own).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Submit work, and cancel the tenant's own jobs.
    Ingest,
    /// Jobs, job events, documents.
    Read,
    Search,
    /// Delete documents.
    Delete,
    /// Every scope above, plus keys, dead letters, stats, limits and audit, across tenants.
    Admin,
    /// The llm-gateway's OpenAI-compatible API.
    Llm,
}

impl Scope {
    pub const ALL: [Scope; 6] = [Scope::Ingest, Scope::Read, Scope::Search, Scope::Delete, Scope::Admin, Scope::Llm];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Read => "read",
            Scope::Search => "search",
            Scope::Delete => "delete",
            Scope::Admin => "admin",
            Scope::Llm => "llm",
        }
    }

    /// Whether holding `self` grants `needed`.
    pub fn grants(self, needed: Scope) -> bool {
        self == needed || (self == Scope::Admin && needed != Scope::Llm)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope {0:?} (known: ingest, read, search, delete, admin, llm)")]
pub struct UnknownScope(pub String);

impl FromStr for Scope {
    type Err = UnknownScope;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == s).ok_or_else(|| UnknownScope(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_grants_every_api_scope_but_not_llm() {
        for scope in [Scope::Ingest, Scope::Read, Scope::Search, Scope::Delete, Scope::Admin] {
            assert!(Scope::Admin.grants(scope), "{scope}");
        }
        assert!(!Scope::Admin.grants(Scope::Llm));
        assert!(!Scope::Read.grants(Scope::Search));
        assert!(Scope::Llm.grants(Scope::Llm));
    }

    #[test]
    fn names_round_trip_through_text_and_json() {
        for scope in Scope::ALL {
            assert_eq!(scope.as_str().parse::<Scope>(), Ok(scope));
            assert_eq!(serde_json::to_string(&scope).ok(), Some(format!("\"{scope}\"")));
        }
        assert!("Admin".parse::<Scope>().is_err());
    }
}
