//! `GET /v1/models` and `GET /v1/models/{id}`: the models the gateway's upstreams serve, as
//! OpenAI lists them, so that tools which check a model exists before using it work.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;

use super::OpenAiError;
use crate::core::Gateway;

#[derive(Serialize)]
pub(super) struct ModelList {
    object: &'static str,
    data: Vec<Model>,
}

#[derive(Serialize)]
pub(super) struct Model {
    id: String,
    object: &'static str,
    /// OpenAI's is when the model was published; the gateway does not know, and says 0.
    created: i64,
    owned_by: &'static str,
}

impl Model {
    fn new(id: String) -> Self {
        Self { id, object: "model", created: 0, owned_by: "millrace" }
    }
}

pub(super) async fn list(State(gateway): State<Arc<Gateway>>) -> Json<ModelList> {
    Json(ModelList { object: "list", data: gateway.models().into_iter().map(Model::new).collect() })
}

pub(super) async fn retrieve(
    State(gateway): State<Arc<Gateway>>,
    Path(id): Path<String>,
) -> Result<Json<Model>, OpenAiError> {
    match gateway.models().into_iter().find(|model| *model == id) {
        Some(model) => Ok(Json(Model::new(model))),
        None => Err(OpenAiError::model_not_found(&id)),
    }
}
