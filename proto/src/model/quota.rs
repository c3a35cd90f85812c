//! What a 429 says: a short rate limit (the key cools) or a used-up quota (the key is
//! exhausted until the provider resets it). One reading for the data planes and the
//! control plane's probes.

use serde_json::Value;

use super::ProviderType;

/// The meaning of a 429 answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TooMany {
    /// Requests or tokens per minute: wait for `Retry-After` (or the default cooldown).
    RateLimited,
    /// A quota is used up until the provider resets it.
    QuotaExhausted {
        /// A per-day quota (Gemini's reset at midnight Pacific time).
        daily: bool,
        /// The quota is per model: other models may still use the key.
        per_model: bool,
    },
}

/// Reads a 429's body. Gemini and Vertex: `RESOURCE_EXHAUSTED` whose `QuotaFailure`
/// details name a per-day quota (`GenerateRequestsPerDayPerProjectPerModel...`); per-minute
/// quotas only cool the key. OpenAI-compatible: `insufficient_quota` (billing: no known
/// reset). Anthropic has no daily quota: its 429s always cool.
pub fn classify_429(provider_type: ProviderType, body: &[u8]) -> TooMany {
    let Ok(json) = serde_json::from_slice::<Value>(body) else {
        return TooMany::RateLimited;
    };
    let error = &json["error"];
    match provider_type {
        ProviderType::Gemini | ProviderType::VertexExpress => gemini_quota(error),
        ProviderType::OpenAi | ProviderType::Mock => {
            let code = error["code"].as_str().or_else(|| error["type"].as_str());
            if code == Some("insufficient_quota") {
                TooMany::QuotaExhausted {
                    daily: false,
                    per_model: false,
                }
            } else {
                TooMany::RateLimited
            }
        }
        ProviderType::Anthropic => TooMany::RateLimited,
    }
}

fn gemini_quota(error: &Value) -> TooMany {
    let Some(details) = error["details"].as_array() else {
        return TooMany::RateLimited;
    };
    let mut daily = None;
    for detail in details {
        let is_quota_failure = detail["@type"]
            .as_str()
            .is_some_and(|t| t.ends_with("google.rpc.QuotaFailure"));
        if !is_quota_failure {
            continue;
        }
        for violation in detail["violations"].as_array().into_iter().flatten() {
            let id = violation["quotaId"].as_str().unwrap_or_default();
            if !id.contains("PerDay") {
                continue;
            }
            let per_model =
                id.contains("PerModel") || violation["quotaDimensions"]["model"].is_string();
            daily = Some(daily.unwrap_or(true) && per_model);
        }
    }
    match daily {
        Some(per_model) => TooMany::QuotaExhausted {
            daily: true,
            per_model,
        },
        None => TooMany::RateLimited,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GEMINI_DAILY: &str = r#"{"error":{"code":429,"message":"You exceeded your current quota","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaMetric":"generativelanguage.googleapis.com/generate_content_free_tier_requests","quotaId":"GenerateRequestsPerMinutePerProjectPerModel-FreeTier","quotaDimensions":{"location":"global","model":"gemini-2.5-flash"}},{"quotaMetric":"generativelanguage.googleapis.com/generate_content_free_tier_requests","quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier","quotaDimensions":{"location":"global","model":"gemini-2.5-flash"}}]},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"20s"}]}}"#;
    const GEMINI_MINUTE: &str = r#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaId":"GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]}]}}"#;

    #[test]
    fn gemini_daily_quotas_exhaust_per_model_minute_quotas_cool() {
        assert_eq!(
            classify_429(ProviderType::Gemini, GEMINI_DAILY.as_bytes()),
            TooMany::QuotaExhausted {
                daily: true,
                per_model: true
            }
        );
        assert_eq!(
            classify_429(ProviderType::VertexExpress, GEMINI_MINUTE.as_bytes()),
            TooMany::RateLimited
        );
        assert_eq!(
            classify_429(ProviderType::Gemini, b"not json"),
            TooMany::RateLimited
        );
    }

    #[test]
    fn openai_insufficient_quota_exhausts_anthropic_always_cools() {
        let body = br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
        assert_eq!(
            classify_429(ProviderType::OpenAi, body),
            TooMany::QuotaExhausted {
                daily: false,
                per_model: false
            }
        );
        let limit = br#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#;
        assert_eq!(
            classify_429(ProviderType::OpenAi, limit),
            TooMany::RateLimited
        );
        assert_eq!(
            classify_429(ProviderType::Anthropic, body),
            TooMany::RateLimited
        );
    }
}
