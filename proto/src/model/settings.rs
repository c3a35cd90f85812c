//! The runtime settings: their names, defaults, checks and typed form.
//!
//! The control plane stores only values an operator set; every data plane receives the
//! effective value of every setting and reads them through [`Settings`].

use std::collections::BTreeMap;
use std::time::Duration;

use super::InvalidResource;

/// What a setting's value must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingKind {
    /// An integer in `min..=max`.
    Integer { min: u64, max: u64 },
    /// One of the listed words.
    OneOf(&'static [&'static str]),
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
        name: "first_byte_timeout_ms",
        default: "60000",
        kind: SettingKind::Integer {
            min: 100,
            max: 600_000,
        },
        description: "time allowed for an upstream's first response byte before the request moves to another key, in milliseconds",
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
    /// Checks a value and returns it in canonical form.
    pub fn check(&self, value: &str) -> Result<String, InvalidResource> {
        let value = value.trim();
        match self.kind {
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

/// The effective settings, typed.
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
        Ok(Self {
            connect_timeout: Duration::from_millis(int("connect_timeout_ms")?),
            cooldown_default: Duration::from_secs(int("cooldown_default_secs")?),
            first_byte_timeout: Duration::from_millis(int("first_byte_timeout_ms")?),
            idle_timeout: Duration::from_millis(int("idle_timeout_ms")?),
            max_failures: small("max_failures")?,
            max_request_body_bytes: int("max_request_body_bytes")?,
            max_retries: small("max_retries")?,
            wait_budget: Duration::from_millis(int("wait_budget_ms")?),
        })
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
    fn from_values_overrides_defaults() {
        let mut values = BTreeMap::new();
        values.insert("max_retries".to_string(), "7".to_string());
        assert_eq!(Settings::from_values(&values).unwrap().max_retries, 7);
        values.insert("bogus".to_string(), "1".to_string());
        assert!(Settings::from_values(&values).is_err());
    }
}
