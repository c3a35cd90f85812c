//! The runtime settings: their names, defaults, checks and typed form.
//!
//! The control plane stores only values an operator set; every data plane receives the
//! effective value of every setting and reads them through [`Settings`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::routing::{self, glob_matches};
use super::{InvalidResource, validate_route_pattern};

/// What a setting's value must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingKind {
    /// An integer in `min..=max`.
    Integer { min: u64, max: u64 },
    /// One of the listed words.
    OneOf(&'static [&'static str]),
    /// A JSON array of `{"category": "HARM_CATEGORY_...", "threshold": ...}` objects, or
    /// the empty string for none.
    SafetySettings,
    /// A JSON object from a model name or glob to a thinking budget in tokens
    /// (`-1` dynamic, `0` off, at most [`MAX_THINKING_BUDGET`]).
    ThinkingBudgets,
    /// Model names or globs separated by commas; empty for none.
    ModelGlobs,
    /// One model name: no spaces, no `/`, at most 128 characters.
    ModelName,
}

/// Largest thinking budget accepted: Gemini's largest (2.5 Pro).
pub const MAX_THINKING_BUDGET: i32 = 32_768;

/// The safety thresholds the Gemini API accepts.
pub const SAFETY_THRESHOLDS: &[&str] = &[
    "HARM_BLOCK_THRESHOLD_UNSPECIFIED",
    "BLOCK_LOW_AND_ABOVE",
    "BLOCK_MEDIUM_AND_ABOVE",
    "BLOCK_ONLY_HIGH",
    "BLOCK_NONE",
    "OFF",
];

/// Default of `gemini_safety_settings`: every adjustable category off, as gemini-balance
/// sends them.
const DEFAULT_SAFETY_SETTINGS: &str = concat!(
    r#"[{"category":"HARM_CATEGORY_HARASSMENT","threshold":"OFF"},"#,
    r#"{"category":"HARM_CATEGORY_HATE_SPEECH","threshold":"OFF"},"#,
    r#"{"category":"HARM_CATEGORY_SEXUALLY_EXPLICIT","threshold":"OFF"},"#,
    r#"{"category":"HARM_CATEGORY_DANGEROUS_CONTENT","threshold":"OFF"},"#,
    r#"{"category":"HARM_CATEGORY_CIVIC_INTEGRITY","threshold":"OFF"}]"#,
);

/// One entry of Gemini's `safetySettings`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafetySetting {
    /// `HARM_CATEGORY_...`.
    pub category: String,
    /// One of [`SAFETY_THRESHOLDS`].
    pub threshold: String,
}

/// One known setting.
#[derive(Debug, Clone, Copy)]
pub struct SettingSpec {
    pub name: &'static str,
    pub default: &'static str,
    pub kind: SettingKind,
    pub description: &'static str,
}

/// Every setting the planes understand, by name.
pub const SETTINGS: &[SettingSpec] = &[
    SettingSpec {
        name: "allow_image_urls",
        default: "false",
        kind: SettingKind::OneOf(&["false", "true"]),
        description: "whether image URLs in client requests may go to providers that take URLs (Fulcrum never fetches them); when false only inline (data:) images are accepted",
    },
    SettingSpec {
        name: "connect_timeout_ms",
        default: "5000",
        kind: SettingKind::Integer {
            min: 100,
            max: 120_000,
        },
        description: "time allowed to connect to an upstream, in milliseconds",
    },
    SettingSpec {
        name: "cooldown_default_secs",
        default: "60",
        kind: SettingKind::Integer {
            min: 1,
            max: 86_400,
        },
        description: "how long a key cools after a 429 that names no Retry-After, in seconds",
    },
    SettingSpec {
        name: "error_log_retention_days",
        default: "30",
        kind: SettingKind::Integer { min: 1, max: 3_650 },
        description: "days error records are kept before the retention job deletes them",
    },
    SettingSpec {
        name: "first_byte_timeout_ms",
        default: "60000",
        kind: SettingKind::Integer {
            min: 100,
            max: 600_000,
        },
        description: "time allowed for an upstream's first response byte before the request moves to another key, in milliseconds",
    },
    SettingSpec {
        name: "gemini_safety_settings",
        default: DEFAULT_SAFETY_SETTINGS,
        kind: SettingKind::SafetySettings,
        description: "safetySettings sent to Gemini when the client gives none: a JSON array of {category, threshold}; empty sends none",
    },
    SettingSpec {
        name: "gemini_thinking_budgets",
        default: "{}",
        kind: SettingKind::ThinkingBudgets,
        description: "thinking budget per Gemini model when the client gives none: a JSON object from model name or glob to tokens (-1 dynamic, 0 off)",
    },
    SettingSpec {
        name: "hidden_models",
        default: "",
        kind: SettingKind::ModelGlobs,
        description: "model names or globs, comma-separated, left out of model listings",
    },
    SettingSpec {
        name: "idle_timeout_ms",
        default: "300000",
        kind: SettingKind::Integer {
            min: 1_000,
            max: 3_600_000,
        },
        description: "longest silence allowed inside a streamed upstream answer, in milliseconds",
    },
    SettingSpec {
        name: "log_level",
        default: "info",
        kind: SettingKind::OneOf(&["error", "warn", "info", "debug", "trace"]),
        description: "level of the planes' own process logs (RUST_LOG, when set, wins)",
    },
    SettingSpec {
        name: "log_request_bodies",
        default: "false",
        kind: SettingKind::OneOf(&["false", "true"]),
        description: "whether error records keep the client's request body (at most 16 KiB)",
    },
    SettingSpec {
        name: "max_failures",
        default: "3",
        kind: SettingKind::Integer { min: 1, max: 1_000 },
        description: "consecutive failures (5xx, network errors, timeouts) after which a key leaves rotation",
    },
    SettingSpec {
        name: "max_request_body_bytes",
        default: "33554432",
        kind: SettingKind::Integer {
            min: 1_024,
            max: 1_073_741_824,
        },
        description: "largest client request body accepted, in bytes; larger ones get 413",
    },
    SettingSpec {
        name: "max_retries",
        default: "3",
        kind: SettingKind::Integer { min: 0, max: 50 },
        description: "further attempts on other keys or providers after a retryable failure",
    },
    SettingSpec {
        name: "probe_backoff_base_ms",
        default: "60000",
        kind: SettingKind::Integer {
            min: 1,
            max: 86_400_000,
        },
        description: "first wait before a failing or invalid key is probed again, in milliseconds; it doubles with every failed probe (with jitter) up to probe_backoff_max_ms",
    },
    SettingSpec {
        name: "probe_backoff_max_ms",
        default: "3600000",
        kind: SettingKind::Integer {
            min: 1,
            max: 604_800_000,
        },
        description: "longest wait between probes of a failing or invalid key, in milliseconds",
    },
    SettingSpec {
        name: "probe_concurrency",
        default: "8",
        kind: SettingKind::Integer { min: 1, max: 1_000 },
        description: "probes in flight at once, for the whole cluster (only the control plane probes)",
    },
    SettingSpec {
        name: "probe_idle_recheck_ms",
        default: "86400000",
        kind: SettingKind::Integer {
            min: 0,
            max: 2_592_000_000,
        },
        description: "an active key with no traffic and no probe for this long is probed again, in milliseconds; 0 turns it off",
    },
    SettingSpec {
        name: "probe_rate_per_minute",
        default: "60",
        kind: SettingKind::Integer {
            min: 1,
            max: 6_000_000,
        },
        description: "most probes started per minute against one provider, evenly spaced, so probing never trips the provider's own rate limits",
    },
    SettingSpec {
        name: "probe_timeout_ms",
        default: "10000",
        kind: SettingKind::Integer {
            min: 100,
            max: 120_000,
        },
        description: "time allowed for one probe, connect to last byte, in milliseconds; a probe that takes longer counts as a failure",
    },
    SettingSpec {
        name: "probe_vertex_model",
        default: "gemini-2.5-flash-lite",
        kind: SettingKind::ModelName,
        description: "model asked for a one-token generation when probing a Vertex Express key (Vertex has no key-scoped model listing)",
    },
    SettingSpec {
        name: "quota_reset_default_ms",
        default: "3600000",
        kind: SettingKind::Integer {
            min: 1,
            max: 604_800_000,
        },
        description: "how long a key (or one of its models) stays exhausted when the quota's reset time is not known (OpenAI insufficient_quota, non-daily quotas), in milliseconds",
    },
    SettingSpec {
        name: "request_log_buffer",
        default: "10000",
        kind: SettingKind::Integer {
            min: 10,
            max: 10_000_000,
        },
        description: "request records a data plane holds while the control plane is away; past it the oldest are dropped and counted",
    },
    SettingSpec {
        name: "request_log_retention_days",
        default: "7",
        kind: SettingKind::Integer { min: 1, max: 3_650 },
        description: "days request records are kept before the retention job deletes them",
    },
    SettingSpec {
        name: "request_logging",
        default: "true",
        kind: SettingKind::OneOf(&["false", "true"]),
        description: "whether data planes record every request and attempt (error records are kept either way)",
    },
    SettingSpec {
        name: "wait_budget_ms",
        default: "0",
        kind: SettingKind::Integer {
            min: 0,
            max: 600_000,
        },
        description: "how long a request may wait for a cooling key to come back before it gets 429, in milliseconds",
    },
];

/// Looks a setting up by name.
pub fn spec(name: &str) -> Result<&'static SettingSpec, InvalidResource> {
    SETTINGS.iter().find(|s| s.name == name).ok_or_else(|| {
        let known: Vec<&str> = SETTINGS.iter().map(|s| s.name).collect();
        InvalidResource::new(
            "setting",
            name,
            format!(
                "unknown setting {name:?}; known settings: {}",
                known.join(", ")
            ),
        )
    })
}

impl SettingSpec {
    fn invalid(&self, value: &str, why: &str) -> InvalidResource {
        InvalidResource::new(
            "setting",
            self.name,
            format!("invalid value {value:?} for {}: {why}", self.name),
        )
    }

    /// Checks a value and returns it in canonical form.
    pub fn check(&self, value: &str) -> Result<String, InvalidResource> {
        let value = value.trim();
        match self.kind {
            SettingKind::SafetySettings => {
                let parsed =
                    parse_safety_settings(value).map_err(|why| self.invalid(value, &why))?;
                Ok(render_safety_settings(&parsed))
            }
            SettingKind::ThinkingBudgets => {
                let parsed =
                    parse_thinking_budgets(value).map_err(|why| self.invalid(value, &why))?;
                Ok(render_thinking_budgets(&parsed))
            }
            SettingKind::ModelGlobs => {
                let parsed = parse_model_globs(value).map_err(|why| self.invalid(value, &why))?;
                Ok(parsed.join(","))
            }
            SettingKind::ModelName => {
                let plausible = !value.is_empty()
                    && value.len() <= 128
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.:@".contains(&b));
                if plausible {
                    Ok(value.to_string())
                } else {
                    Err(self.invalid(
                        value,
                        "expected a model name (letters, digits, - _ . : @; at most 128)",
                    ))
                }
            }
            SettingKind::Integer { min, max } => match value.parse::<u64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n.to_string()),
                _ => Err(InvalidResource::new(
                    "setting",
                    self.name,
                    format!(
                        "invalid value {value:?} for {}: expected an integer from {min} to {max}",
                        self.name
                    ),
                )),
            },
            SettingKind::OneOf(words) => {
                let lower = value.to_ascii_lowercase();
                if words.contains(&lower.as_str()) {
                    return Ok(lower);
                }
                Err(InvalidResource::new(
                    "setting",
                    self.name,
                    format!(
                        "invalid value {value:?} for {}: expected one of {}",
                        self.name,
                        words.join(", ")
                    ),
                ))
            }
        }
    }
}

/// `""` is none; otherwise a JSON array of `{category, threshold}` with known thresholds
/// and each category once.
fn parse_safety_settings(value: &str) -> Result<Vec<SafetySetting>, String> {
    if value.is_empty() {
        return Ok(Vec::new());
    }
    const SHAPE: &str = r#"expected a JSON array of {"category": "HARM_CATEGORY_...", "threshold": "..."}, or an empty value for none"#;
    let json: Value = serde_json::from_str(value).map_err(|e| format!("{SHAPE} ({e})"))?;
    let Value::Array(items) = json else {
        return Err(SHAPE.to_string());
    };
    let mut out: Vec<SafetySetting> = Vec::with_capacity(items.len());
    for item in &items {
        let Value::Object(fields) = item else {
            return Err(SHAPE.to_string());
        };
        if let Some(extra) = fields
            .keys()
            .find(|k| *k != "category" && *k != "threshold")
        {
            return Err(format!("unknown field {extra:?}; {SHAPE}"));
        }
        let (Some(Value::String(category)), Some(Value::String(threshold))) =
            (fields.get("category"), fields.get("threshold"))
        else {
            return Err(SHAPE.to_string());
        };
        let well_formed = category.strip_prefix("HARM_CATEGORY_").is_some_and(|rest| {
            !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
        });
        if !well_formed {
            return Err(format!(
                "category {category:?} is not HARM_CATEGORY_ followed by capitals"
            ));
        }
        if !SAFETY_THRESHOLDS.contains(&threshold.as_str()) {
            return Err(format!(
                "threshold {threshold:?} is not one of {}",
                SAFETY_THRESHOLDS.join(", ")
            ));
        }
        if out.iter().any(|s| s.category == *category) {
            return Err(format!("category {category} is given twice"));
        }
        out.push(SafetySetting {
            category: category.clone(),
            threshold: threshold.clone(),
        });
    }
    Ok(out)
}

/// Compact JSON in the order given; `""` for none. Categories and thresholds are checked
/// to need no escaping.
fn render_safety_settings(settings: &[SafetySetting]) -> String {
    if settings.is_empty() {
        return String::new();
    }
    let items: Vec<String> = settings
        .iter()
        .map(|s| {
            format!(
                r#"{{"category":"{}","threshold":"{}"}}"#,
                s.category, s.threshold
            )
        })
        .collect();
    format!("[{}]", items.join(","))
}

/// A JSON object from model name or glob to a budget in `-1..=MAX_THINKING_BUDGET`.
fn parse_thinking_budgets(value: &str) -> Result<BTreeMap<String, i32>, String> {
    const SHAPE: &str = r#"expected a JSON object from model name or glob to a thinking budget (-1 dynamic, 0 off), for example {"gemini-2.5-pro": 4096}"#;
    let json: Value = serde_json::from_str(value).map_err(|e| format!("{SHAPE} ({e})"))?;
    let Value::Object(entries) = json else {
        return Err(SHAPE.to_string());
    };
    let mut out = BTreeMap::new();
    for (model, budget) in entries {
        validate_route_pattern(&model).map_err(|e| e.message)?;
        let budget = budget
            .as_i64()
            .and_then(|b| i32::try_from(b).ok())
            .filter(|b| (-1..=MAX_THINKING_BUDGET).contains(b))
            .ok_or_else(|| {
                format!(
                    "budget {budget} for {model:?} is not an integer from -1 to {MAX_THINKING_BUDGET}"
                )
            })?;
        out.insert(model, budget);
    }
    Ok(out)
}

fn render_thinking_budgets(budgets: &BTreeMap<String, i32>) -> String {
    let object: serde_json::Map<String, Value> = budgets
        .iter()
        .map(|(model, budget)| (model.clone(), Value::from(*budget)))
        .collect();
    Value::Object(object).to_string()
}

/// Comma-separated globs, trimmed, empty entries and repeats dropped.
fn parse_model_globs(value: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for glob in value.split(',').map(str::trim).filter(|g| !g.is_empty()) {
        validate_route_pattern(glob).map_err(|e| e.message)?;
        if !out.iter().any(|g| g == glob) {
            out.push(glob.to_string());
        }
    }
    Ok(out)
}

/// The effective settings, typed. The structured ones are parsed once, here, and read
/// through accessors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub connect_timeout: Duration,
    pub cooldown_default: Duration,
    pub first_byte_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_failures: u32,
    pub max_request_body_bytes: u64,
    pub max_retries: u32,
    pub wait_budget: Duration,
    /// First backoff of a failing or invalid key's probes (`probe_backoff_base_ms`).
    pub probe_backoff_base: Duration,
    /// Longest backoff between probes (`probe_backoff_max_ms`).
    pub probe_backoff_max: Duration,
    /// Probes in flight at once, cluster-wide (`probe_concurrency`).
    pub probe_concurrency: u32,
    /// Idle time after which an active key is probed again; `None` when off.
    pub probe_idle_recheck: Option<Duration>,
    /// Probes started per minute against one provider (`probe_rate_per_minute`).
    pub probe_rate_per_minute: u32,
    /// Deadline of one probe (`probe_timeout_ms`).
    pub probe_timeout: Duration,
    /// Model of the one-token generation that probes a Vertex Express key.
    pub probe_vertex_model: String,
    /// How long an exhausted quota with no known reset time lasts.
    pub quota_reset_default: Duration,
    allow_image_urls: bool,
    pub error_log_retention: Duration,
    pub log_level: String,
    pub log_request_bodies: bool,
    pub request_log_buffer: usize,
    pub request_log_retention: Duration,
    pub request_logging: bool,
    gemini_safety_settings: Vec<SafetySetting>,
    gemini_thinking_budgets: BTreeMap<String, i32>,
    hidden_models: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self::from_values(&BTreeMap::new()).expect("defaults are valid")
    }
}

impl Settings {
    /// Builds the typed settings from stored values; missing names take their default.
    /// Unknown names are refused, so a control plane newer than this data plane is noticed.
    pub fn from_values(values: &BTreeMap<String, String>) -> Result<Self, InvalidResource> {
        for name in values.keys() {
            spec(name)?;
        }
        let get = |name: &str| -> Result<String, InvalidResource> {
            let spec = spec(name)?;
            spec.check(values.get(name).map_or(spec.default, String::as_str))
        };
        let int = |name: &str| -> Result<u64, InvalidResource> {
            get(name)?.parse::<u64>().map_err(|_| {
                InvalidResource::new("setting", name, format!("{name} is not an integer"))
            })
        };
        let small = |name: &str| -> Result<u32, InvalidResource> {
            u32::try_from(int(name)?)
                .map_err(|_| InvalidResource::new("setting", name, format!("{name} is too large")))
        };
        // Structured values are checked by parsing them straight into their typed form.
        let structured = |name: &str| -> Result<(&'static SettingSpec, &str), InvalidResource> {
            let spec = spec(name)?;
            Ok((
                spec,
                values.get(name).map_or(spec.default, String::as_str).trim(),
            ))
        };
        let (spec_of, raw) = structured("gemini_safety_settings")?;
        let gemini_safety_settings =
            parse_safety_settings(raw).map_err(|why| spec_of.invalid(raw, &why))?;
        let (spec_of, raw) = structured("gemini_thinking_budgets")?;
        let gemini_thinking_budgets =
            parse_thinking_budgets(raw).map_err(|why| spec_of.invalid(raw, &why))?;
        let (spec_of, raw) = structured("hidden_models")?;
        let hidden_models = parse_model_globs(raw).map_err(|why| spec_of.invalid(raw, &why))?;
        Ok(Self {
            allow_image_urls: get("allow_image_urls")? == "true",
            error_log_retention: Duration::from_secs(int("error_log_retention_days")? * 86_400),
            log_level: get("log_level")?.to_string(),
            log_request_bodies: get("log_request_bodies")? == "true",
            request_log_buffer: usize::try_from(int("request_log_buffer")?).unwrap_or(usize::MAX),
            request_log_retention: Duration::from_secs(int("request_log_retention_days")? * 86_400),
            request_logging: get("request_logging")? == "true",
            gemini_safety_settings,
            gemini_thinking_budgets,
            hidden_models,
            connect_timeout: Duration::from_millis(int("connect_timeout_ms")?),
            cooldown_default: Duration::from_secs(int("cooldown_default_secs")?),
            first_byte_timeout: Duration::from_millis(int("first_byte_timeout_ms")?),
            idle_timeout: Duration::from_millis(int("idle_timeout_ms")?),
            max_failures: small("max_failures")?,
            max_request_body_bytes: int("max_request_body_bytes")?,
            max_retries: small("max_retries")?,
            wait_budget: Duration::from_millis(int("wait_budget_ms")?),
            probe_backoff_base: Duration::from_millis(int("probe_backoff_base_ms")?),
            probe_backoff_max: Duration::from_millis(int("probe_backoff_max_ms")?),
            probe_concurrency: small("probe_concurrency")?,
            probe_idle_recheck: match int("probe_idle_recheck_ms")? {
                0 => None,
                ms => Some(Duration::from_millis(ms)),
            },
            probe_rate_per_minute: small("probe_rate_per_minute")?,
            probe_timeout: Duration::from_millis(int("probe_timeout_ms")?),
            probe_vertex_model: get("probe_vertex_model")?,
            quota_reset_default: Duration::from_millis(int("quota_reset_default_ms")?),
        })
    }

    /// Whether the data plane may fetch image URLs that clients send (`allow_image_urls`).
    pub fn allow_image_urls(&self) -> bool {
        self.allow_image_urls
    }

    /// The `safetySettings` to send to Gemini when the client gives none; empty means
    /// send none.
    pub fn gemini_safety_settings(&self) -> &[SafetySetting] {
        &self.gemini_safety_settings
    }

    /// The thinking budget configured for `model`, by the routes' rule: an exact name
    /// beats any glob, then the glob with the most literal characters, then the lexically
    /// first. `None` when no entry matches.
    pub fn thinking_budget(&self, model: &str) -> Option<i32> {
        let mut best: Option<(&str, routing::Rank, i32)> = None;
        for (pattern, budget) in &self.gemini_thinking_budgets {
            let Some(rank) = routing::rank(pattern, model) else {
                continue;
            };
            if best.is_none_or(|(other, other_rank, _)| {
                routing::beats(rank, pattern, other_rank, other)
            }) {
                best = Some((pattern, rank, *budget));
            }
        }
        best.map(|(_, _, budget)| budget)
    }

    /// Every configured thinking budget, by model name or glob.
    pub fn gemini_thinking_budgets(&self) -> &BTreeMap<String, i32> {
        &self.gemini_thinking_budgets
    }

    /// Whether `model` is left out of model listings (`hidden_models`).
    pub fn is_model_hidden(&self, model: &str) -> bool {
        self.hidden_models
            .iter()
            .any(|glob| glob_matches(glob, model))
    }

    /// The globs of `hidden_models`.
    pub fn hidden_models(&self) -> &[String] {
        &self.hidden_models
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_sorted() {
        let s = Settings::default();
        assert_eq!(s.max_failures, 3);
        let names: Vec<&str> = SETTINGS.iter().map(|s| s.name).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
    }

    #[test]
    fn checks_values() {
        let max_failures = spec("max_failures").unwrap();
        assert_eq!(max_failures.check(" 5 ").unwrap(), "5");
        assert!(max_failures.check("0").is_err());
        assert!(max_failures.check("many").is_err());
        let words = SettingSpec {
            name: "words",
            default: "a",
            kind: SettingKind::OneOf(&["info", "debug"]),
            description: "",
        };
        assert_eq!(words.check("DEBUG").unwrap(), "debug");
        assert!(words.check("loud").is_err());
        let err = spec("nope").unwrap_err();
        assert!(err.message.contains("max_retries"), "{}", err.message);
    }

    #[test]
    fn safety_settings() {
        let spec = spec("gemini_safety_settings").unwrap();
        assert_eq!(
            spec.check(spec.default).unwrap(),
            spec.default,
            "default is canonical"
        );
        let s = Settings::default();
        let categories: Vec<&str> = s
            .gemini_safety_settings()
            .iter()
            .map(|s| s.category.as_str())
            .collect();
        assert_eq!(
            categories,
            [
                "HARM_CATEGORY_HARASSMENT",
                "HARM_CATEGORY_HATE_SPEECH",
                "HARM_CATEGORY_SEXUALLY_EXPLICIT",
                "HARM_CATEGORY_DANGEROUS_CONTENT",
                "HARM_CATEGORY_CIVIC_INTEGRITY"
            ]
        );
        assert!(
            s.gemini_safety_settings()
                .iter()
                .all(|s| s.threshold == "OFF")
        );
        assert_eq!(spec.check("  ").unwrap(), "", "empty sends none");
        assert_eq!(
            spec.check(
                r#"[ {"threshold": "BLOCK_NONE", "category": "HARM_CATEGORY_HATE_SPEECH"} ]"#
            )
            .unwrap(),
            r#"[{"category":"HARM_CATEGORY_HATE_SPEECH","threshold":"BLOCK_NONE"}]"#
        );
        for (bad, needle) in [
            ("{}", "expected a JSON array"),
            ("[1]", "expected a JSON array"),
            (
                r#"[{"category":"HARM_CATEGORY_X"}]"#,
                "expected a JSON array",
            ),
            (
                r#"[{"category":"violence","threshold":"OFF"}]"#,
                "HARM_CATEGORY_",
            ),
            (
                r#"[{"category":"HARM_CATEGORY_X","threshold":"NEVER"}]"#,
                "BLOCK_ONLY_HIGH",
            ),
            (
                r#"[{"category":"HARM_CATEGORY_X","threshold":"OFF","method":"x"}]"#,
                "unknown field",
            ),
            (
                r#"[{"category":"HARM_CATEGORY_X","threshold":"OFF"},{"category":"HARM_CATEGORY_X","threshold":"OFF"}]"#,
                "twice",
            ),
            ("[", "expected a JSON array"),
        ] {
            let err = spec.check(bad).unwrap_err();
            assert!(err.message.contains(needle), "{bad}: {}", err.message);
        }
        let mut values = BTreeMap::new();
        values.insert("gemini_safety_settings".to_string(), String::new());
        assert!(
            Settings::from_values(&values)
                .unwrap()
                .gemini_safety_settings()
                .is_empty()
        );
    }

    #[test]
    fn thinking_budgets() {
        let spec = spec("gemini_thinking_budgets").unwrap();
        assert_eq!(
            spec.check(r#"{"gemini-2.5-pro": 4096, "gemini-*": -1, "gemini-2.5-flash": 0}"#)
                .unwrap(),
            r#"{"gemini-*":-1,"gemini-2.5-flash":0,"gemini-2.5-pro":4096}"#
        );
        for (bad, needle) in [
            ("[]", "expected a JSON object"),
            (r#"{"m": -2}"#, "from -1 to 32768"),
            (r#"{"m": 40000}"#, "from -1 to 32768"),
            (r#"{"m": 1.5}"#, "from -1 to 32768"),
            (r#"{"m": "8"}"#, "from -1 to 32768"),
            (r#"{"m?": 8}"#, "only '*'"),
        ] {
            let err = spec.check(bad).unwrap_err();
            assert!(err.message.contains(needle), "{bad}: {}", err.message);
        }
        let mut values = BTreeMap::new();
        values.insert(
            "gemini_thinking_budgets".to_string(),
            r#"{"*": 1024, "gemini-*": -1, "gemini-2.5-flash": 0}"#.to_string(),
        );
        let s = Settings::from_values(&values).unwrap();
        assert_eq!(s.thinking_budget("gemini-2.5-flash"), Some(0), "exact wins");
        assert_eq!(
            s.thinking_budget("gemini-2.5-pro"),
            Some(-1),
            "specific glob"
        );
        assert_eq!(s.thinking_budget("other"), Some(1024));
        assert_eq!(Settings::default().thinking_budget("gemini-2.5-pro"), None);
    }

    #[test]
    fn hidden_models_and_image_urls() {
        let spec = spec("hidden_models").unwrap();
        assert_eq!(
            spec.check(" gpt-4*, ,tts-1,gpt-4* ").unwrap(),
            "gpt-4*,tts-1",
            "trimmed, empty entries and repeats dropped"
        );
        assert!(spec.check("a,b[1]").is_err());
        let mut values = BTreeMap::new();
        values.insert("hidden_models".to_string(), "gpt-4*,tts-1".to_string());
        values.insert("allow_image_urls".to_string(), "true".to_string());
        let s = Settings::from_values(&values).unwrap();
        assert!(s.is_model_hidden("gpt-4o"));
        assert!(s.is_model_hidden("tts-1"));
        assert!(!s.is_model_hidden("tts-1-hd"));
        assert!(s.allow_image_urls());
        let d = Settings::default();
        assert!(!d.allow_image_urls());
        assert!(!d.is_model_hidden("anything"));
        assert!(spec_check("allow_image_urls", "maybe").is_err());
        assert_eq!(spec_check("allow_image_urls", "TRUE").unwrap(), "true");
    }

    fn spec_check(name: &str, value: &str) -> Result<String, InvalidResource> {
        spec(name)?.check(value)
    }

    #[test]
    fn from_values_overrides_defaults() {
        let mut values = BTreeMap::new();
        values.insert("max_retries".to_string(), "7".to_string());
        assert_eq!(Settings::from_values(&values).unwrap().max_retries, 7);
        values.insert("bogus".to_string(), "1".to_string());
        assert!(Settings::from_values(&values).is_err());
    }
}
