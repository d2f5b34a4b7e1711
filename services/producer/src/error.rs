//! API errors: a JSON body `{"error": {"code", "message", "field"?}}` with a stable
//! `HL-API-…` code. Messages name fields, never values.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An error the API answers with.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
}

impl ApiError {
    /// 400 for a field of the request.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "HL-API-INVALID",
            message: message.into(),
            field: Some(field.into()),
        }
    }

    /// 400 for a body that is not JSON at all.
    pub fn malformed(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "HL-API-MALFORMED",
            message: message.into(),
            field: None,
        }
    }

    /// 413: the body is larger than the API takes.
    pub fn too_large(limit: usize) -> Self {
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "HL-API-TOO-LARGE",
            message: format!("the request body is larger than {limit} bytes"),
            field: None,
        }
    }

    /// The answer when Kafka did not take a write.
    pub fn from_send(error: &kafka_io::SendError) -> Self {
        match error {
            kafka_io::SendError::Refused(rdkafka::types::RDKafkaErrorCode::MessageSizeTooLarge) => {
                ApiError {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    code: error.code(),
                    message: "the record is larger than Kafka accepts".to_owned(),
                    field: None,
                }
            }
            other => ApiError::unavailable(other.code()),
        }
    }

    /// 401.
    pub fn unauthorized() -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: "HL-API-UNAUTHORIZED",
            message: "missing or wrong bearer token".to_owned(),
            field: None,
        }
    }

    /// 404.
    pub fn not_found(what: &str) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code: "HL-API-NOT-FOUND",
            message: format!("{what} not found"),
            field: None,
        }
    }

    /// 405.
    pub fn method_not_allowed() -> Self {
        ApiError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            code: "HL-API-METHOD",
            message: "method not allowed on this route".to_owned(),
            field: None,
        }
    }

    /// 503: Kafka did not take the write (shutting down or refusing).
    pub fn unavailable(code: &'static str) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code,
            message: "the write was not acknowledged by Kafka; retry".to_owned(),
            field: None,
        }
    }

    /// 503 with what went wrong (a read Kafka did not answer, a replay not committed).
    pub fn unavailable_because(code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code,
            message: message.into(),
            field: None,
        }
    }

    /// 409: the request collided with another one; it may be sent again.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::CONFLICT,
            code,
            message: message.into(),
            field: None,
        }
    }

    /// 412: the endpoint changed since the version the caller gave in `If-Match`.
    pub fn precondition_failed() -> Self {
        ApiError {
            status: StatusCode::PRECONDITION_FAILED,
            code: "HL-API-PRECONDITION",
            message: "the endpoint changed since the version given in If-Match: read it again (its ETag) and retry".to_owned(),
            field: Some("If-Match".to_owned()),
        }
    }

    /// The HTTP status it answers.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The error as a batch result or a body names it.
    pub fn detail(&self) -> crate::bodies::ErrorDetail {
        crate::bodies::ErrorDetail {
            code: self.code.to_owned(),
            message: self.message.clone(),
            field: self.field.clone(),
        }
    }

    /// The JSON body it answers: `{"error": {"code", "message", "field"?}}`.
    pub fn body(&self) -> crate::bodies::ErrorBody {
        crate::bodies::ErrorBody {
            error: self.detail(),
        }
    }

    /// 500 for our own failure (never the caller's mistake).
    pub fn internal(code: &'static str) -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code,
            message: "internal error".to_owned(),
            field: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}
