//! One probe: the cheapest upstream call that proves a key, per provider type, and what
//! its answer means for the key. Same reading as the data plane's: 401/403 (and Gemini's
//! 400 `API_KEY_INVALID`) refuse the key, 429 cools it or exhausts a quota, 5xx and
//! network errors are failures, 2xx proves it.

use std::time::Duration;

use bytes::Bytes;
use fulcrum_proto::model::quota::{self, TooMany};
use fulcrum_proto::model::{ProviderType, mask_secret};
use http::{HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};

/// What a probe showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The upstream accepted the key.
    Works,
    /// The upstream refused the key itself.
    Refused { status: u16 },
    /// 429 without a used-up quota; the wait the upstream asked for, if it named one.
    RateLimited { retry_after_ms: Option<i64> },
    /// 429 with a used-up quota.
    Exhausted {
        daily: bool,
        retry_after_ms: Option<i64>,
    },
    /// 5xx, an unexpected status, a network error or no answer in time.
    Failed { detail: String },
}

/// The probes' HTTP client: the data planes' own (see `fulcrum_outbound`).
pub use fulcrum_outbound::Client;

/// Header that names the prober, so an upstream (and the tests) can tell probes apart.
pub const USER_AGENT: &str = concat!("fulcrum-probe/", env!("CARGO_PKG_VERSION"));
/// The Anthropic API version probes ask for.
const ANTHROPIC_VERSION: &str = "2023-06-01";
/// Most of an error body read to classify it.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// `base` with `version` appended unless it already ends in a version segment (`/v1`,
/// `/v1beta`), as the data plane reads base URLs.
fn versioned(base: &str, version: &str) -> String {
    let base = base.trim_end_matches('/');
    let has_version = base.rsplit('/').next().is_some_and(|last| {
        last.starts_with('v') && last[1..].starts_with(|c: char| c.is_ascii_digit())
    });
    if has_version {
        base.to_string()
    } else {
        format!("{base}/{version}")
    }
}

/// The probe request for a key of a provider; `None` for providers that answer locally.
pub fn request(
    provider_type: ProviderType,
    base_url: &str,
    secret: &str,
    vertex_model: &str,
) -> Result<Option<Request<Full<Bytes>>>, String> {
    let base = base_url.trim_end_matches('/');
    let (method, url, body) = match provider_type {
        ProviderType::Mock => return Ok(None),
        ProviderType::OpenAi => (Method::GET, format!("{base}/models"), Bytes::new()),
        ProviderType::Gemini => (
            Method::GET,
            format!("{}/models?pageSize=1", versioned(base, "v1beta")),
            Bytes::new(),
        ),
        // Vertex Express keys cannot list models: one token of the configured model.
        ProviderType::VertexExpress => (
            Method::POST,
            format!(
                "{}/publishers/google/models/{vertex_model}:generateContent",
                versioned(base, "v1")
            ),
            Bytes::from_static(
                br#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}],"generationConfig":{"maxOutputTokens":1}}"#,
            ),
        ),
        ProviderType::Anthropic => (
            Method::GET,
            format!("{}/models?limit=1", versioned(base, "v1")),
            Bytes::new(),
        ),
    };
    let has_body = !body.is_empty();
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = method;
    *request.uri_mut() = url
        .parse()
        .map_err(|_| "the provider's base URL is not usable".to_string())?;
    let headers = request.headers_mut();
    headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
    if has_body {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    let invalid = |_| "the key cannot be sent as a header".to_string();
    let (name, mut value) = match provider_type {
        ProviderType::OpenAi | ProviderType::Mock => (
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {secret}")).map_err(invalid)?,
        ),
        ProviderType::Gemini | ProviderType::VertexExpress => (
            header::HeaderName::from_static("x-goog-api-key"),
            HeaderValue::from_str(secret).map_err(invalid)?,
        ),
        ProviderType::Anthropic => {
            headers.insert(
                header::HeaderName::from_static("anthropic-version"),
                HeaderValue::from_static(ANTHROPIC_VERSION),
            );
            (
                header::HeaderName::from_static("x-api-key"),
                HeaderValue::from_str(secret).map_err(invalid)?,
            )
        }
    };
    value.set_sensitive(true);
    headers.insert(name, value);
    Ok(Some(request))
}

/// Sends one probe and reads what it shows, within `timeout`. Error details never carry
/// the key: it is masked wherever an upstream echoes it.
pub async fn probe(
    client: &Client,
    provider_type: ProviderType,
    base_url: &str,
    secret: &str,
    vertex_model: &str,
    provider_headers: &[fulcrum_proto::pb::UpstreamHeader],
    timeout: Duration,
) -> ProbeOutcome {
    let mut request = match request(provider_type, base_url, secret, vertex_model) {
        Ok(Some(request)) => request,
        Ok(None) => return ProbeOutcome::Works,
        Err(detail) => return ProbeOutcome::Failed { detail },
    };
    // The provider's own headers go with every call to it, probes included (an
    // organization or tenant header may be what makes the key work); the probe's own
    // headers and the key are never replaced by them.
    for h in provider_headers {
        let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_str(&h.value),
        ) else {
            continue;
        };
        if !request.headers().contains_key(&name) {
            request.headers_mut().insert(name, value);
        }
    }
    let answer = tokio::time::timeout(timeout, async {
        let response = client.request(request).await?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|secs| i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX));
        let mut body = Vec::new();
        let mut incoming = response.into_body();
        while let Some(frame) = incoming.frame().await {
            let frame = frame.map_err(|e| e.to_string());
            let Ok(frame) = frame else { break };
            if let Ok(data) = frame.into_data() {
                body.extend_from_slice(&data);
                if body.len() >= MAX_ERROR_BODY {
                    break;
                }
            }
        }
        Ok::<_, hyper_util::client::legacy::Error>((status, retry_after, body))
    })
    .await;
    match answer {
        Err(_) => ProbeOutcome::Failed {
            detail: format!("no answer within {} ms", timeout.as_millis()),
        },
        Ok(Err(e)) => {
            let what = if e.is_connect() {
                "connect error"
            } else {
                "request failed"
            };
            let mut detail = what.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(inner) = source {
                detail = format!("{what}: {inner}");
                source = inner.source();
            }
            ProbeOutcome::Failed {
                detail: detail.replace(secret, &mask_secret(secret)),
            }
        }
        Ok(Ok((status, retry_after_ms, body))) => {
            classify(provider_type, status, retry_after_ms, &body)
        }
    }
}

/// What an answer means for the key.
pub fn classify(
    provider_type: ProviderType,
    status: StatusCode,
    retry_after_ms: Option<i64>,
    body: &[u8],
) -> ProbeOutcome {
    match status.as_u16() {
        200..=299 => ProbeOutcome::Works,
        401 | 403 => ProbeOutcome::Refused {
            status: status.as_u16(),
        },
        // Gemini answers a bad key with 400 and the reason API_KEY_INVALID.
        400 if memchr_contains(body, b"API_KEY_INVALID") => ProbeOutcome::Refused { status: 400 },
        429 => match quota::classify_429(provider_type, body) {
            TooMany::RateLimited => ProbeOutcome::RateLimited { retry_after_ms },
            TooMany::QuotaExhausted { daily, .. } => ProbeOutcome::Exhausted {
                daily,
                retry_after_ms,
            },
        },
        code => ProbeOutcome::Failed {
            detail: format!("probe answered {code}"),
        },
    }
}

fn memchr_contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_use_the_cheapest_call_and_the_right_header() {
        let r = request(ProviderType::Gemini, "https://g.example", "AIzaSECRET", "m")
            .unwrap()
            .unwrap();
        assert_eq!(
            r.uri().to_string(),
            "https://g.example/v1beta/models?pageSize=1"
        );
        assert_eq!(r.headers()["x-goog-api-key"], "AIzaSECRET");
        assert!(r.headers()["x-goog-api-key"].is_sensitive());
        let r = request(ProviderType::OpenAi, "https://o.example/v1/", "sk-1", "m")
            .unwrap()
            .unwrap();
        assert_eq!(r.uri().to_string(), "https://o.example/v1/models");
        assert_eq!(r.headers()[header::AUTHORIZATION], "Bearer sk-1");
        let r = request(ProviderType::Anthropic, "https://a.example", "sk-ant", "m")
            .unwrap()
            .unwrap();
        assert_eq!(r.uri().to_string(), "https://a.example/v1/models?limit=1");
        assert_eq!(r.headers()["anthropic-version"], ANTHROPIC_VERSION);
        let r = request(
            ProviderType::VertexExpress,
            "https://v.example",
            "k",
            "flash",
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.method(), Method::POST);
        assert_eq!(
            r.uri().to_string(),
            "https://v.example/v1/publishers/google/models/flash:generateContent"
        );
        assert!(request(ProviderType::Mock, "", "k", "m").unwrap().is_none());
    }

    #[test]
    fn answers_are_read_like_the_data_plane_reads_them() {
        let c = |code: u16, body: &str| {
            classify(
                ProviderType::Gemini,
                StatusCode::from_u16(code).unwrap(),
                Some(5000),
                body.as_bytes(),
            )
        };
        assert_eq!(c(200, ""), ProbeOutcome::Works);
        assert_eq!(c(401, ""), ProbeOutcome::Refused { status: 401 });
        assert_eq!(
            c(
                400,
                r#"{"error":{"details":[{"reason":"API_KEY_INVALID"}]}}"#
            ),
            ProbeOutcome::Refused { status: 400 }
        );
        assert_eq!(
            c(429, "{}"),
            ProbeOutcome::RateLimited {
                retry_after_ms: Some(5000)
            }
        );
        assert!(matches!(c(503, ""), ProbeOutcome::Failed { .. }));
        assert!(matches!(c(404, ""), ProbeOutcome::Failed { .. }));
    }
}
