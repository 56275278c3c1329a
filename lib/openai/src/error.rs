//! Failures in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, with the
//! status they go with. The OpenAI SDKs pick their exception from the status and show the
//! message; clients under test must parse a server's failures exactly as the real ones.

use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::lenient;

/// OpenAI's error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    #[serde(default)]
    pub message: String,
    #[serde(rename = "type", default, deserialize_with = "lenient")]
    pub kind: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub param: Option<String>,
    /// Text, such as `rate_limit_exceeded` or `insufficient_quota`; a number some servers send
    /// reads as absent.
    #[serde(default, deserialize_with = "lenient")]
    pub code: Option<String>,
}

/// An error a server answers: the status and the body's fields.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// OpenAI's `type`.
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), kind, param: None, code: None }
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }

    /// 400 for a field with a wrong value.
    pub fn invalid(param: impl Into<String>, code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message).with_param(param).with_code(code)
    }

    pub fn missing(param: &str) -> Self {
        Self::invalid(param, "missing_required_parameter", format!("Missing required parameter: '{param}'."))
    }

    pub fn invalid_type(param: &str, expected: &str, got: &str) -> Self {
        Self::invalid(
            param,
            "invalid_type",
            format!("Invalid type for '{param}': expected {expected}, but got {got} instead."),
        )
    }

    pub fn unsupported(param: &str, message: impl Into<String>) -> Self {
        Self::invalid(param, "unsupported_parameter", message)
    }

    pub fn unparsable_json(detail: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            format!("We could not parse the JSON body of your request. ({detail})"),
        )
        .with_code("invalid_json")
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_request_error", message).with_code("invalid_api_key")
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "invalid_request_error", message).with_code("not_found")
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "invalid_request_error", message).with_code("method_not_allowed")
    }

    /// The JSON body; a server that streams also sends it as the last event of a stream that
    /// fails part-way.
    pub fn body(&self) -> Value {
        let body = ErrorBody {
            error: ErrorDetail {
                message: self.message.clone(),
                kind: Some(self.kind.to_owned()),
                param: self.param.clone(),
                code: self.code.map(str::to_owned),
            },
        };
        serde_json::to_value(body).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    #[test]
    fn the_body_has_all_four_fields() {
        let body = ApiError::not_found("Invalid URL (GET /v1/nothing)").body();
        assert_eq!(
            body,
            json!({"error": {"message": "Invalid URL (GET /v1/nothing)", "type": "invalid_request_error",
                             "param": null, "code": "not_found"}})
        );
    }

    #[test]
    fn bodies_of_other_servers_are_read_leniently() {
        let body: ErrorBody =
            serde_json::from_value(json!({"error": {"message": "boom", "type": 3, "code": 500, "extra": 1}})).unwrap();
        assert_eq!(body.error, ErrorDetail { message: "boom".into(), ..ErrorDetail::default() });
        let body: ErrorBody = serde_json::from_value(json!({"error": {"code": "insufficient_quota"}})).unwrap();
        assert_eq!(body.error.code.as_deref(), Some("insufficient_quota"));
    }
}
