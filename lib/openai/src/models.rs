//! `GET /v1/models` and `GET /v1/models/{id}`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelList {
    #[serde(skip_deserializing)]
    pub object: &'static str,
    pub data: Vec<Model>,
}

impl ModelList {
    pub fn new(data: Vec<Model>) -> Self {
        Self { object: "list", data }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Model {
    pub id: String,
    #[serde(skip_deserializing)]
    pub object: &'static str,
    /// When the model was published; 0 from servers that do not know.
    #[serde(default)]
    pub created: u64,
    #[serde(default)]
    pub owned_by: String,
}

impl Model {
    pub fn new(id: impl Into<String>, owned_by: impl Into<String>) -> Self {
        Self { id: id.into(), object: "model", created: 0, owned_by: owned_by.into() }
    }
}
