//! [`ApiError`]: the only way a handler fails. Each variant is one status and
//! one `{"error": {"code", "message"}}` body of SPEC §5.

use std::time::Duration;

use daeda_online::lookup::LookupError;
use daeda_online::OnlineError;
use daeda_sql_wire::Reply;
use hyper::StatusCode;

use crate::sql::policy_runner::RunnerError;
use crate::sql::WorkerError;
use daeda_online::render::sql::JsonError;

/// `Retry-After` of a 503: the pool reconnects and Redis finishes loading in
/// about this time, and clients that honour it do not hammer a recovering Redis.
pub const RETRY_AFTER_SECS: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed (JSON, key types, batch shape).
    #[error("{0}")]
    BadRequest(String),
    /// 400: more entities than `max_batch`.
    #[error("{0}")]
    BatchTooLarge(String),
    /// 401: no valid bearer token. The message says what to fix without
    /// telling an attacker which check failed beyond that.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 403: the token does not cover the service or plane, or the service is
    /// not approved for serving.
    #[error("{0}")]
    Forbidden(String),
    /// 403: the SQL policy refused the query; the message says why.
    #[error("{0}")]
    PolicyDenied(String),
    /// 404: unknown route, service or feature, or nothing materialized yet.
    #[error("{0}")]
    NotFound(String),
    /// 405: the route exists with another method, the one named (and sent
    /// as `Allow`).
    #[error("{path} takes {allow}")]
    MethodNotAllowed { path: String, allow: hyper::Method },
    /// 409: the live generation was written for another schema.
    #[error("{0}")]
    SchemaMismatch(String),
    /// 413: the body is over the limit.
    #[error("request body is over the limit of {0} bytes")]
    TooLarge(usize),
    /// 500: an online row does not decode.
    #[error("{0}")]
    Internal(String),
    /// 503: Redis is unreachable or not ready (e.g. loading its dataset);
    /// answered with `Retry-After`.
    #[error("{0}")]
    Unavailable(String),
    /// 503: the SQL worker is (re)starting, died under the query, or is busy.
    #[error("{0}")]
    SqlUnavailable(String),
    /// 400: the SQL result is over its byte cap.
    #[error("{0}")]
    ResultTooLarge(String),
    /// 429: a query of this token could not be stopped and cost the SQL
    /// worker its life; the token's SQL is refused for a while (seconds).
    #[error("a query of this token could not be stopped and the SQL worker was restarted; its SQL queries are refused for {0} s")]
    SqlCooldown(u32),
    /// 503: the gateway already holds `max_connections` connections; written
    /// on the refused connection before it is closed.
    #[error("the gateway is at its limit of {0} connections; retry shortly")]
    TooManyConnections(usize),
    /// 504: the request ran past its deadline.
    #[error("the request took longer than {0} ms")]
    Timeout(u64),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::BatchTooLarge(_) | ApiError::ResultTooLarge(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::PolicyDenied(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::SchemaMismatch(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable(_) | ApiError::SqlUnavailable(_) | ApiError::TooManyConnections(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::SqlCooldown(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::BatchTooLarge(_) => "batch_too_large",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::PolicyDenied(_) => "policy_denied",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::SchemaMismatch(_) => "schema_mismatch",
            ApiError::TooLarge(_) => "body_too_large",
            ApiError::Internal(_) => "internal",
            ApiError::Unavailable(_) => "redis_unavailable",
            ApiError::SqlUnavailable(_) => "sql_unavailable",
            ApiError::ResultTooLarge(_) => "result_too_large",
            ApiError::TooManyConnections(_) => "too_many_connections",
            ApiError::SqlCooldown(_) => "sql_cooldown",
            ApiError::Timeout(_) => "timeout",
        }
    }

    /// Seconds a client should wait before retrying (the `Retry-After`
    /// header), for errors that pass by themselves.
    pub fn retry_after(&self) -> Option<u32> {
        match self {
            ApiError::Unavailable(_) | ApiError::SqlUnavailable(_) | ApiError::TooManyConnections(_) => {
                Some(RETRY_AFTER_SECS)
            }
            ApiError::SqlCooldown(secs) => Some(*secs),
            _ => None,
        }
    }

    /// The `Allow` header of a 405: the method the route takes.
    pub fn allow(&self) -> Option<&hyper::Method> {
        match self {
            ApiError::MethodNotAllowed { allow, .. } => Some(allow),
            _ => None,
        }
    }

    /// One error of each variant, for checks over every code and status (the
    /// OpenAPI document must name them all). A new variant fails to compile
    /// here until it is listed.
    pub fn all() -> Vec<ApiError> {
        let all = vec![
            ApiError::BadRequest(String::new()),
            ApiError::BatchTooLarge(String::new()),
            ApiError::Unauthorized(""),
            ApiError::Forbidden(String::new()),
            ApiError::PolicyDenied(String::new()),
            ApiError::NotFound(String::new()),
            ApiError::MethodNotAllowed { path: String::new(), allow: hyper::Method::GET },
            ApiError::SchemaMismatch(String::new()),
            ApiError::TooLarge(0),
            ApiError::Internal(String::new()),
            ApiError::Unavailable(String::new()),
            ApiError::SqlUnavailable(String::new()),
            ApiError::ResultTooLarge(String::new()),
            ApiError::SqlCooldown(1),
            ApiError::TooManyConnections(1),
            ApiError::Timeout(0),
        ];
        for e in &all {
            match e {
                ApiError::BadRequest(_)
                | ApiError::BatchTooLarge(_)
                | ApiError::Unauthorized(_)
                | ApiError::Forbidden(_)
                | ApiError::PolicyDenied(_)
                | ApiError::NotFound(_)
                | ApiError::MethodNotAllowed { .. }
                | ApiError::SchemaMismatch(_)
                | ApiError::TooLarge(_)
                | ApiError::Internal(_)
                | ApiError::Unavailable(_)
                | ApiError::SqlUnavailable(_)
                | ApiError::ResultTooLarge(_)
                | ApiError::SqlCooldown(_)
                | ApiError::TooManyConnections(_)
                | ApiError::Timeout(_) => {}
            }
        }
        all
    }

    pub fn body(&self) -> String {
        serde_json::json!({"error": {"code": self.code(), "message": self.to_string()}}).to_string()
    }
}

impl From<OnlineError> for ApiError {
    fn from(e: OnlineError) -> ApiError {
        match e {
            e @ OnlineError::Unavailable { .. } => ApiError::Unavailable(e.to_string()),
            e => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<LookupError> for ApiError {
    fn from(e: LookupError) -> ApiError {
        match e {
            LookupError::BadRequest(m) => ApiError::BadRequest(m),
            e @ LookupError::TooMany { .. } => ApiError::BatchTooLarge(e.to_string()),
            e @ (LookupError::UnknownFeature { .. } | LookupError::NoLiveGeneration(_)) => {
                ApiError::NotFound(e.to_string())
            }
            e @ LookupError::FingerprintMismatch { .. } => ApiError::SchemaMismatch(e.to_string()),
            e @ LookupError::Corrupt { .. } => ApiError::Internal(e.to_string()),
            LookupError::Online(e) => e.into(),
        }
    }
}

/// The SQL plane's own threads gave no answer.
impl From<RunnerError> for ApiError {
    fn from(e: RunnerError) -> ApiError {
        ApiError::SqlUnavailable(e.to_string())
    }
}

/// The worker gave no reply. [`WorkerError::Killed`] is a timeout; the
/// handler maps it itself, after putting the caller on cooldown.
impl From<WorkerError> for ApiError {
    fn from(e: WorkerError) -> ApiError {
        ApiError::SqlUnavailable(e.to_string())
    }
}

/// Arrow refusing a batch daeda built (a lookup's, or the worker's result
/// stream) is a bug on this side, never the client's.
impl From<arrow_schema::ArrowError> for ApiError {
    fn from(e: arrow_schema::ArrowError) -> ApiError {
        ApiError::Internal(format!("arrow: {e}"))
    }
}

impl From<JsonError> for ApiError {
    fn from(e: JsonError) -> ApiError {
        match e {
            e @ JsonError::TooLarge(_) => ApiError::ResultTooLarge(e.to_string()),
            e => ApiError::Internal(e.to_string()),
        }
    }
}

/// The worker's reply: its rows (Arrow IPC, and whether they were truncated),
/// or the error the client sees. `timeout` is the query's deadline, named by a 504.
pub(crate) fn sql_rows(reply: Reply, timeout: Duration) -> Result<(Vec<u8>, bool), ApiError> {
    match reply {
        Reply::Rows { arrow_ipc, truncated } => Ok((arrow_ipc, truncated)),
        Reply::QueryError(m) => Err(ApiError::BadRequest(m)),
        Reply::Disagreement(m) | Reply::Refused(m) => Err(ApiError::PolicyDenied(m)),
        Reply::TooLarge(m) => Err(ApiError::ResultTooLarge(m)),
        Reply::Timeout(_) => Err(ApiError::Timeout(timeout.as_millis() as u64)),
        Reply::Internal(m) => Err(ApiError::Internal(m)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_its_status_and_json_shape() {
        let cases = [
            (ApiError::BadRequest("x".into()), 400, "bad_request"),
            (ApiError::BatchTooLarge("x".into()), 400, "batch_too_large"),
            (ApiError::Unauthorized("x"), 401, "unauthorized"),
            (ApiError::Forbidden("x".into()), 403, "forbidden"),
            (ApiError::PolicyDenied("x".into()), 403, "policy_denied"),
            (ApiError::NotFound("x".into()), 404, "not_found"),
            (ApiError::MethodNotAllowed { path: "/x".into(), allow: hyper::Method::GET }, 405, "method_not_allowed"),
            (ApiError::SchemaMismatch("x".into()), 409, "schema_mismatch"),
            (ApiError::TooLarge(10), 413, "body_too_large"),
            (ApiError::Internal("x".into()), 500, "internal"),
            (ApiError::Unavailable("x".into()), 503, "redis_unavailable"),
            (ApiError::SqlUnavailable("x".into()), 503, "sql_unavailable"),
            (ApiError::ResultTooLarge("x".into()), 400, "result_too_large"),
            (ApiError::TooManyConnections(3), 503, "too_many_connections"),
            (ApiError::SqlCooldown(30), 429, "sql_cooldown"),
            (ApiError::Timeout(5), 504, "timeout"),
        ];
        for (e, status, code) in cases {
            assert_eq!(e.status().as_u16(), status);
            let body: serde_json::Value = serde_json::from_str(&e.body()).unwrap();
            assert_eq!(body["error"]["code"], code);
            assert!(body["error"]["message"].is_string());
            assert_eq!(body.as_object().unwrap().len(), 1);
            assert_eq!(e.retry_after().is_some(), status == 503 || status == 429);
        }
    }

    #[test]
    fn each_sql_reply_and_sql_failure_has_its_status_and_code() {
        let t = Duration::from_millis(250);
        let code = |r: Result<(Vec<u8>, bool), ApiError>| {
            r.map(|_| (200, "rows")).unwrap_or_else(|e| (e.status().as_u16(), e.code()))
        };
        let rows = Reply::Rows { arrow_ipc: vec![1], truncated: true };
        assert_eq!(sql_rows(rows, t).unwrap(), (vec![1], true));
        assert_eq!(code(sql_rows(Reply::QueryError("x".into()), t)), (400, "bad_request"));
        assert_eq!(code(sql_rows(Reply::Disagreement("x".into()), t)), (403, "policy_denied"));
        assert_eq!(code(sql_rows(Reply::Refused("x".into()), t)), (403, "policy_denied"));
        assert_eq!(code(sql_rows(Reply::TooLarge("x".into()), t)), (400, "result_too_large"));
        assert!(matches!(sql_rows(Reply::Timeout("x".into()), t), Err(ApiError::Timeout(250))));
        assert_eq!(code(sql_rows(Reply::Internal("x".into()), t)), (500, "internal"));
        assert_eq!(ApiError::from(WorkerError::Died).code(), "sql_unavailable");
        assert_eq!(ApiError::from(RunnerError::Busy).code(), "sql_unavailable");
        assert_eq!(ApiError::from(JsonError::TooLarge(9)).code(), "result_too_large");
        assert_eq!(ApiError::from(JsonError::Render("x".into())).code(), "internal");
    }
}
