//! The pooled upstream HTTP client, and what an upstream's answer means.

use std::time::Duration;

pub use fulcrum_outbound::{BodyError, Client, Clients, ResponseBody};
use fulcrum_proto::model::{Provider, ProviderType};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};

use crate::protocol::{Operation, gemini, openai};

/// Client headers that travel upstream; everything else (the client's own credentials
/// above all) stays here.
pub static FORWARDED_REQUEST_HEADERS: [HeaderName; 4] = [
    HeaderName::from_static("content-type"),
    HeaderName::from_static("accept"),
    HeaderName::from_static("openai-beta"),
    HeaderName::from_static("idempotency-key"),
];

/// Upstream headers that travel back to the client. Framing headers are the server's to
/// set; cookies and anything else unknown are dropped.
pub static FORWARDED_RESPONSE_HEADERS: [HeaderName; 12] = [
    HeaderName::from_static("content-type"),
    HeaderName::from_static("cache-control"),
    HeaderName::from_static("retry-after"),
    HeaderName::from_static("x-request-id"),
    HeaderName::from_static("openai-processing-ms"),
    HeaderName::from_static("openai-version"),
    HeaderName::from_static("x-ratelimit-limit-requests"),
    HeaderName::from_static("x-ratelimit-limit-tokens"),
    HeaderName::from_static("x-ratelimit-remaining-requests"),
    HeaderName::from_static("x-ratelimit-remaining-tokens"),
    HeaderName::from_static("x-ratelimit-reset-requests"),
    HeaderName::from_static("x-ratelimit-reset-tokens"),
];

/// Client headers that travel to an Anthropic upstream besides the common ones.
pub static FORWARDED_ANTHROPIC_HEADERS: [HeaderName; 2] = [
    HeaderName::from_static("anthropic-version"),
    HeaderName::from_static("anthropic-beta"),
];

static X_GOOG_API_KEY: HeaderName = HeaderName::from_static("x-goog-api-key");
static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
static ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");

/// The upstream URL of an operation on a provider. Gemini, Vertex and Anthropic base URLs
/// may be given with or without their API version (`https://host` or `https://host/v1beta`),
/// as their SDKs take them without; OpenAI-compatible ones include it, as OpenAI's SDK does.
/// Keys never travel in the URL.
pub fn uri(
    provider: &Provider,
    operation: Operation,
    model: &str,
    stream: bool,
) -> Result<Uri, String> {
    let base = provider.base_url.trim_end_matches('/');
    let versioned = |default_version: &str| {
        let has_version = base.rsplit('/').next().is_some_and(|last| {
            last.starts_with('v') && last[1..].starts_with(|c: char| c.is_ascii_digit())
        });
        if has_version {
            base.to_string()
        } else {
            format!("{base}/{default_version}")
        }
    };
    let unsupported = || {
        format!(
            "a {} provider has no {} endpoint",
            provider.provider_type,
            operation.as_str()
        )
    };
    let url = match provider.provider_type {
        ProviderType::OpenAi | ProviderType::Mock => {
            let path = openai::upstream_path(operation).ok_or_else(unsupported)?;
            // Built by hand: this is every OpenAI request's path, and `format!` costs more.
            // The exact capacity lets the URI keep the buffer as it is: a `Bytes` made from
            // a `Vec` with room to spare costs a second allocation.
            let named = operation == Operation::GetModel;
            let mut url = String::with_capacity(
                base.len() + path.len() + if named { 1 + model.len() } else { 0 },
            );
            url.push_str(base);
            url.push_str(path);
            if named {
                url.push('/');
                url.push_str(model);
            }
            url
        }
        ProviderType::Gemini | ProviderType::VertexExpress => {
            let root = if provider.provider_type == ProviderType::Gemini {
                format!("{}/models", versioned("v1beta"))
            } else {
                format!("{}/publishers/google/models", versioned("v1"))
            };
            match operation {
                Operation::ListModels => root,
                Operation::GetModel => format!("{root}/{model}"),
                _ => {
                    let method = gemini::method(operation, stream).ok_or_else(unsupported)?;
                    let alt = if stream { "?alt=sse" } else { "" };
                    format!("{root}/{model}:{method}{alt}")
                }
            }
        }
        ProviderType::Anthropic => {
            let root = versioned("v1");
            match operation {
                Operation::Chat => format!("{root}/messages"),
                Operation::CountTokens => format!("{root}/messages/count_tokens"),
                Operation::ListModels => format!("{root}/models"),
                Operation::GetModel => format!("{root}/models/{model}"),
                _ => return Err(unsupported()),
            }
        }
    };
    // From the `String` itself: parsing a `&str` would copy it.
    Uri::try_from(url).map_err(|_| format!("provider {:?} has an unusable base URL", provider.name))
}

/// Puts the provider key where its API expects it: a bearer token for OpenAI-compatible
/// upstreams, `x-goog-api-key` for Gemini and Vertex, `x-api-key` (with an API version)
/// for Anthropic. The value is marked sensitive so that no debug output shows it.
pub fn set_credentials(
    provider_type: ProviderType,
    secret: &str,
    headers: &mut HeaderMap,
) -> Result<(), String> {
    let invalid = |_| "a provider key cannot be sent as a header".to_string();
    let (name, mut value) = match provider_type {
        ProviderType::OpenAi | ProviderType::Mock => {
            let mut value = Vec::with_capacity(7 + secret.len());
            value.extend_from_slice(b"Bearer ");
            value.extend_from_slice(secret.as_bytes());
            // The buffer becomes the value: one allocation, not a second copy.
            (
                header::AUTHORIZATION,
                HeaderValue::from_maybe_shared(bytes::Bytes::from(value)).map_err(invalid)?,
            )
        }
        ProviderType::Gemini | ProviderType::VertexExpress => (
            X_GOOG_API_KEY.clone(),
            HeaderValue::from_str(secret).map_err(invalid)?,
        ),
        ProviderType::Anthropic => {
            if !headers.contains_key(&ANTHROPIC_VERSION) {
                headers.insert(
                    ANTHROPIC_VERSION.clone(),
                    HeaderValue::from_static(crate::protocol::anthropic::DEFAULT_VERSION),
                );
            }
            (
                X_API_KEY.clone(),
                HeaderValue::from_str(secret).map_err(invalid)?,
            )
        }
    };
    value.set_sensitive(true);
    headers.insert(name, value);
    Ok(())
}

/// Copies the headers named in `names` from `from` into `to`.
pub fn copy_headers(names: &[HeaderName], from: &HeaderMap, to: &mut HeaderMap) {
    // A message carries a few headers and the lists name up to a dozen: walking the
    // message and comparing names (an enum compare for standard ones) costs less than
    // hashing every listed name for a lookup.
    for (name, value) in from {
        if names.contains(name) {
            to.append(name.clone(), value.clone());
        }
    }
}

/// The next data frame of a body, an upstream's answer or a client's request (`None`: it
/// has ended).
pub async fn next_data<B>(body: &mut B) -> Option<Result<bytes::Bytes, B::Error>>
where
    B: hyper::body::Body<Data = bytes::Bytes> + Unpin,
{
    use http_body_util::BodyExt;
    loop {
        match body.frame().await? {
            // Trailers carry nothing the other side needs.
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    return Some(Ok(data));
                }
            }
            Err(e) => return Some(Err(e)),
        }
    }
}

/// The data frames of an upstream body, as a stream.
pub fn data_stream(
    body: ResponseBody,
) -> futures::stream::BoxStream<'static, Result<bytes::Bytes, BodyError>> {
    use futures::StreamExt;
    futures::stream::unfold(body, |mut body| async move {
        let data = next_data(&mut body).await?;
        Some((data, body))
    })
    .boxed()
}

/// What an upstream's answer means for the request and the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// The client's own mistake (400, 404, 413, 422, ...): returned as it came, never
    /// blamed on the key, never retried.
    ClientError,
    /// 429: the key rests; another key may serve the request.
    RateLimited {
        retry_after: Option<Duration>,
    },
    /// 401/403: the upstream refused the key.
    Refused,
    /// 5xx: a failure of the upstream or the key; another key may serve the request.
    ServerError,
}

impl Outcome {
    pub fn classify(status: StatusCode, headers: &HeaderMap) -> Self {
        match status.as_u16() {
            200..=399 => Outcome::Success,
            429 => Outcome::RateLimited {
                retry_after: retry_after(headers),
            },
            401 | 403 => Outcome::Refused,
            500..=599 => Outcome::ServerError,
            _ => Outcome::ClientError,
        }
    }

    /// Whether another key or provider may be tried.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Outcome::RateLimited { .. } | Outcome::Refused | Outcome::ServerError
        )
    }
}

/// The wait an upstream asks for: `retry-after-ms`, else `retry-after` in seconds.
/// HTTP-date forms are rare for APIs and fall back to the configured default.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        return Duration::try_from_secs_f64(ms / 1000.0).ok();
    }
    text("retry-after")
        .and_then(|v| v.parse::<f64>().ok())
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
}

/// Replaces every occurrence of `secret` in an upstream error text with its masked form,
/// so that no error that reaches a client or a log carries one of our keys.
pub fn mask_in(text: &str, secret: &str) -> String {
    if secret.is_empty() || !text.contains(secret) {
        return text.to_string();
    }
    text.replace(secret, &fulcrum_proto::model::mask_secret(secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, v.parse().unwrap());
        }
        map
    }

    #[test]
    fn classifies_statuses() {
        let none = HeaderMap::new();
        assert_eq!(Outcome::classify(StatusCode::OK, &none), Outcome::Success);
        for code in [400, 404, 413, 422] {
            let outcome = Outcome::classify(StatusCode::from_u16(code).unwrap(), &none);
            assert_eq!(outcome, Outcome::ClientError, "{code}");
            assert!(!outcome.is_retryable());
        }
        assert_eq!(
            Outcome::classify(StatusCode::UNAUTHORIZED, &none),
            Outcome::Refused
        );
        assert_eq!(
            Outcome::classify(StatusCode::FORBIDDEN, &none),
            Outcome::Refused
        );
        assert_eq!(
            Outcome::classify(StatusCode::BAD_GATEWAY, &none),
            Outcome::ServerError
        );
        assert_eq!(
            Outcome::classify(
                StatusCode::TOO_MANY_REQUESTS,
                &headers(&[("retry-after", "7")])
            ),
            Outcome::RateLimited {
                retry_after: Some(Duration::from_secs(7))
            }
        );
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(
            retry_after(&headers(&[("retry-after-ms", "1500")])),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", "0.5")])),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            retry_after(&headers(&[(
                "retry-after",
                "Wed, 21 Oct 2015 07:28:00 GMT"
            )])),
            None
        );
        assert_eq!(retry_after(&headers(&[("retry-after", "-3")])), None);
    }

    #[test]
    fn masks_our_key_in_upstream_errors() {
        let text =
            r#"{"error":{"message":"Incorrect API key provided: sk-live-0123456789abcdef."}}"#;
        let masked = mask_in(text, "sk-live-0123456789abcdef");
        assert!(!masked.contains("sk-live-0123456789abcdef"));
        assert!(masked.contains("sk-liv...cdef"));
    }
}
