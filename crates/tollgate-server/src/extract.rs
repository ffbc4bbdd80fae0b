//! Extractors whose rejections are problems, never axum's plain-text defaults.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::problem::ApiError;

/// A JSON body, with the SHA-256 of the request (method, path and body) for
/// idempotency checks. An empty body reads as `{}`, so bodies whose fields are all
/// optional may be left out.
pub struct ApiJson<T> {
    pub value: T,
    pub request_hash: [u8; 32],
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or("");
            let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            // curl -d sends application/x-www-form-urlencoded unless told otherwise; a body
            // that is JSON is still read as JSON (and fails as JSON if it is not).
            let json_like =
                mime == "application/json" || mime.ends_with("+json") || mime == "application/x-www-form-urlencoded";
            if !json_like {
                return Err(ApiError::new(
                    axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UNSUPPORTED_MEDIA_TYPE",
                    format!("send the body as application/json, not '{ct}'"),
                ));
            }
        }
        let mut hasher = Sha256::new();
        hasher.update(req.method().as_str().as_bytes());
        hasher.update(b" ");
        hasher.update(req.uri().path().as_bytes());
        hasher.update(b"\n");
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    e.status(),
                    "PAYLOAD_TOO_LARGE",
                    "the request body is larger than the server accepts for this request (1 MiB; 32 MiB for imports)",
                )
            } else {
                ApiError::bad_request("BODY_UNREADABLE", format!("the request body could not be read: {e}"))
            }
        })?;
        // No body, or `null`, is the empty object: the bodies that may be left out are
        // documented as optional (`null` included). Hashed as it is read, so a retry that
        // sends `{}` where the first try sent nothing is the same request.
        let trimmed = bytes.trim_ascii();
        let body: &[u8] = if trimmed.is_empty() || trimmed == b"null" { b"{}" } else { &bytes };
        hasher.update(body);
        let value = parse_json(body)?;
        Ok(ApiJson { value, request_hash: hasher.finalize().into() })
    }
}

/// Parses a JSON object, telling syntax errors (400) from well-formed JSON of the wrong shape
/// (422), and naming the field at fault.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    // Every body is an object. serde would also read a struct from an array, by
    // position (`["KEY"]` as `{"key":"KEY"}`), which no client means.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{')
        && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
    {
        return Err(ApiError::unprocessable("INVALID_INPUT", "the body must be a JSON object"));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // serde_path_to_error writes `?` for a place it could not name.
        let at = if path == "." || path == "?" { String::new() } else { format!(" at '{path}'") };
        let why = plain(&inner.to_string());
        match inner.classify() {
            serde_json::error::Category::Data => {
                ApiError::unprocessable("INVALID_INPUT", format!("invalid field{at}: {why}"))
            }
            _ => ApiError::bad_request("MALFORMED_JSON", format!("the body is not valid JSON{at}: {why}")),
        }
    })
}

/// serde's message without the server's own type names: `expected struct ValidateBody
/// with 6 elements` reads as `expected a JSON object`. Only after `expected `, serde's
/// own words, so a client's text (an unknown field named `struct x`) is left alone.
fn plain(message: &str) -> String {
    const AT: &str = "expected struct ";
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find(AT) {
        out.push_str(&rest[..i]);
        let after = &rest[i + AT.len()..];
        let name_len = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
        if name_len == 0 {
            out.push_str(AT);
            rest = after;
            continue;
        }
        out.push_str("expected a JSON object");
        rest = &after[name_len..];
        // "with 6 elements" counts the struct's fields, which says nothing to a client.
        if let Some(tail) = rest.strip_prefix(" with ")
            && let Some(end) = tail.find(" element")
            && tail[..end].bytes().all(|b| b.is_ascii_digit())
        {
            let skip = " with ".len() + end + " element".len();
            rest = rest[skip..].strip_prefix('s').unwrap_or(&rest[skip..]);
        }
    }
    out.push_str(rest);
    out
}

/// Path parameters; one that does not decode (bytes that are not UTF-8, say) is a 400
/// problem, not axum's plain-text rejection.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(ApiPath(v)),
            Err(e) => Err(ApiError::bad_request("INVALID_PATH", format!("invalid path: {}", e.body_text()))),
        }
    }
}

/// Query parameters; a bad one is a 400 problem naming it.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(q.as_bytes()));
        serde_path_to_error::deserialize(de).map(ApiQuery).map_err(|e| {
            ApiError::bad_request("INVALID_QUERY", format!("invalid query parameter '{}': {}", e.path(), e.inner()))
        })
    }
}

/// The `Idempotency-Key` header, if sent: 1 to 255 visible ASCII characters.
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(v) = parts.headers.get("idempotency-key") else { return Ok(IdempotencyKey(None)) };
        let s = v
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= 255 && s.bytes().all(|b| b.is_ascii_graphic()));
        match s {
            Some(s) => Ok(IdempotencyKey(Some(s.to_string()))),
            None => Err(ApiError::bad_request(
                "INVALID_IDEMPOTENCY_KEY",
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            )),
        }
    }
}

/// The request id: the caller's `X-Request-Id` if sensible, else a fresh one.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        if let Some(id) = parts.extensions.get::<RequestId>() {
            return Ok(id.clone());
        }
        Ok(RequestId(format!("req_{}", crate::auth::random_hex(8))))
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // Read only by serde.
    struct ValidateBody {
        key: String,
        feature: Option<String>,
    }

    fn detail(body: &str) -> (u16, String) {
        let e = parse_json::<ValidateBody>(body.as_bytes()).unwrap_err();
        (e.status.as_u16(), e.detail)
    }

    /// Messages name the client's JSON, never the server's types, and never a `?` place.
    #[test]
    fn errors_speak_of_the_json_sent() {
        for body in ["[]", "[1,2]", "5", "\"key\""] {
            assert_eq!(detail(body), (422, "the body must be a JSON object".to_string()), "{body}");
        }
        let (status, d) = detail(r#"{"key": 5}"#);
        assert_eq!(status, 422);
        assert!(d.contains("at 'key'") && !d.contains("ValidateBody"), "{d}");
        let (status, d) = detail(r#"{"key": "a", "nope": 1}"#);
        assert_eq!(status, 422);
        assert!(d.contains("nope") && d.contains("key"), "names the fields it takes: {d}");
        let (status, d) = detail(r#"{"key": "a""#);
        assert_eq!(status, 400);
        assert!(!d.contains('?'), "{d}");
        assert_eq!(
            plain("invalid length 0, expected struct ValidateBody with 6 elements"),
            "invalid length 0, expected a JSON object"
        );
        assert_eq!(plain("expected struct Foo with 1 element, got x"), "expected a JSON object, got x");
        assert_eq!(plain("a struct  b"), "a struct  b");
        assert_eq!(plain("unknown field `struct x`, expected `key`"), "unknown field `struct x`, expected `key`");
        let (_, d) = detail(r#"{"struct x": 1}"#);
        assert!(d.contains("struct x"), "the client's own text stays: {d}");
    }
}
