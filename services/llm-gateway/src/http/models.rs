//! `GET /v1/models` and `GET /v1/models/{id}`: the models the gateway's upstreams serve, as
//! OpenAI lists them, so that tools which check a model exists before using it work.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use millrace_openai::{Model, ModelList};

use super::{OpenAiError, error};
use crate::core::Gateway;

fn model(id: String) -> Model {
    // OpenAI's `created` is when the model was published; the gateway does not know, and says 0.
    Model::new(id, "millrace")
}

pub(super) async fn list(State(gateway): State<Arc<Gateway>>) -> Json<ModelList> {
    Json(ModelList::new(gateway.models().into_iter().map(model).collect()))
}

pub(super) async fn retrieve(
    State(gateway): State<Arc<Gateway>>,
    Path(id): Path<String>,
) -> Result<Json<Model>, OpenAiError> {
    match gateway.models().into_iter().find(|model| *model == id) {
        Some(found) => Ok(Json(model(found))),
        None => Err(error::model_not_found(&id).into()),
    }
}
