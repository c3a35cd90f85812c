//! The data plane's Prometheus metrics, served on `GET /metrics`.
//!
//! Counted without locks: atomics in fixed arrays indexed by enums, and per provider a
//! set of them found through an `ArcSwap`'d map (a provider's first answer adds its
//! entry; names come from the config, never from clients). Key counts, the config
//! revision and the log buffer are read at scrape time. Labels are enums and provider
//! names: never a key, a token or a model.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use fulcrum_proto::model::KeyState;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use crate::protocol::Protocol;
use crate::runtime::RuntimeConfigHandle;
use crate::shipper::Stats;

/// Upper bounds of the upstream latency and time-to-first-byte buckets, in microseconds.
const UPSTREAM_BUCKETS_US: [u64; 15] = [
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
    120_000_000,
    300_000_000,
];
/// Upper bounds of the proxy overhead buckets, in microseconds: our own share is small.
const OVERHEAD_BUCKETS_US: [u64; 12] = [
    25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000,
];

const PROTOCOLS: [Protocol; 3] = [Protocol::OpenAi, Protocol::Gemini, Protocol::Anthropic];
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// The provider label of answers no provider gave (no token, no route, ...).
const NO_PROVIDER: &str = "none";

fn protocol_index(protocol: Protocol) -> usize {
    match protocol {
        Protocol::OpenAi => 0,
        Protocol::Gemini => 1,
        Protocol::Anthropic => 2,
    }
}

fn status_index(status: u16) -> usize {
    usize::from(status / 100).clamp(1, 5) - 1
}

/// A histogram of durations with fixed buckets.
#[derive(Debug)]
struct Histogram {
    bounds_us: &'static [u64],
    /// One per bound, plus +Inf.
    counts: Box<[AtomicU64]>,
    sum_us: AtomicU64,
}

impl Histogram {
    fn new(bounds_us: &'static [u64]) -> Self {
        Self {
            bounds_us,
            counts: (0..=bounds_us.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
        }
    }

    fn observe(&self, value: Duration) {
        let us = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
        let bucket = self
            .bounds_us
            .iter()
            .position(|bound| us <= *bound)
            .unwrap_or(self.bounds_us.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Sum in seconds, count, and per-bucket counts (not cumulative) with their bounds.
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut buckets = Vec::with_capacity(self.counts.len());
        let mut count = 0;
        for (i, c) in self.counts.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            count += n;
            let bound = self
                .bounds_us
                .get(i)
                .map_or(f64::INFINITY, |us| *us as f64 / 1e6);
            buckets.push((bound, n));
        }
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        (sum, count, buckets)
    }
}

/// What is counted per provider.
#[derive(Debug)]
struct ProviderMetrics {
    /// By client protocol, then status class.
    requests: [[AtomicU64; 5]; 3],
    upstream_latency: Histogram,
    ttfb: Histogram,
}

impl ProviderMetrics {
    fn new() -> Self {
        Self {
            requests: Default::default(),
            upstream_latency: Histogram::new(&UPSTREAM_BUCKETS_US),
            ttfb: Histogram::new(&UPSTREAM_BUCKETS_US),
        }
    }
}

/// The counters and histograms requests update; one per data plane.
#[derive(Debug)]
pub struct Metrics {
    providers: ArcSwap<HashMap<Box<str>, Arc<ProviderMetrics>>>,
    overhead: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            providers: ArcSwap::from_pointee(HashMap::new()),
            overhead: Histogram::new(&OVERHEAD_BUCKETS_US),
        }
    }
}

// === impl Metrics ===

impl Metrics {
    /// Runs `count` on the provider's metrics, adding them on its first answer.
    fn with_provider(&self, name: &str, count: impl Fn(&ProviderMetrics)) {
        if let Some(found) = self.providers.load().get(name) {
            return count(found);
        }
        // A provider's first answer: copy the map with it added. Rare, so a copy is fine.
        self.providers.rcu(|current| {
            let mut next = HashMap::clone(current);
            next.entry(name.into())
                .or_insert_with(|| Arc::new(ProviderMetrics::new()));
            next
        });
        if let Some(found) = self.providers.load().get(name) {
            count(found);
        }
    }

    /// A client request answered with `status`, by `provider` if one answered.
    pub fn request(&self, protocol: Protocol, provider: Option<&str>, status: u16) {
        self.with_provider(provider.unwrap_or(NO_PROVIDER), |entry| {
            entry.requests[protocol_index(protocol)][status_index(status)]
                .fetch_add(1, Ordering::Relaxed);
        });
    }

    /// One upstream attempt: how long it took and when its first byte came.
    pub fn attempt(&self, provider: &str, latency: Duration, ttfb: Option<Duration>) {
        self.with_provider(provider, |entry| {
            entry.upstream_latency.observe(latency);
            if let Some(ttfb) = ttfb {
                entry.ttfb.observe(ttfb);
            }
        });
    }

    /// A client request answered by `provider` after an attempt of `latency`: what
    /// [`Metrics::request`] and [`Metrics::attempt`] count, with one lookup.
    pub fn answered(
        &self,
        protocol: Protocol,
        provider: &str,
        status: u16,
        latency: Duration,
        ttfb: Option<Duration>,
    ) {
        self.with_provider(provider, |entry| {
            entry.requests[protocol_index(protocol)][status_index(status)]
                .fetch_add(1, Ordering::Relaxed);
            entry.upstream_latency.observe(latency);
            if let Some(ttfb) = ttfb {
                entry.ttfb.observe(ttfb);
            }
        });
    }

    /// The proxy's own time in one request: its latency less the time in attempts.
    pub fn overhead(&self, own: Duration) {
        self.overhead.observe(own);
    }

    /// Requests counted so far for `provider` (`None`: answered by none) and this status
    /// class (1 to 5), over every protocol.
    pub fn requests(&self, provider: Option<&str>, status_class: u16) -> u64 {
        let Some(entry) = self
            .providers
            .load()
            .get(provider.unwrap_or(NO_PROVIDER))
            .map(Arc::clone)
        else {
            return 0;
        };
        entry
            .requests
            .iter()
            .map(|by_class| by_class[status_index(status_class * 100)].load(Ordering::Relaxed))
            .sum()
    }
}

/// Everything a scrape reads.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub metrics: Arc<Metrics>,
    pub runtime: RuntimeConfigHandle,
    pub stats: Arc<Stats>,
    /// The client listener's connection limits at work.
    pub connections: Arc<fulcrum_listen::http::ConnectionStats>,
}

impl Scrape {
    /// The metrics in the OpenMetrics text format.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut registry = Registry::with_prefix("fulcrum");
        registry.register_collector(Box::new(self.clone()));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
        Ok(out)
    }
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let providers = self.metrics.providers.load();
        let mut sorted: Vec<(&str, &Arc<ProviderMetrics>)> =
            providers.iter().map(|(k, v)| (&**k, v)).collect();
        sorted.sort_unstable_by_key(|(name, _)| *name);

        let mut requests = encoder.encode_descriptor(
            "requests",
            "Client requests answered, by client protocol, provider and status class",
            None,
            MetricType::Counter,
        )?;
        for (provider, entry) in &sorted {
            for protocol in PROTOCOLS {
                for (class, name) in STATUS_CLASSES.iter().enumerate() {
                    let n = entry.requests[protocol_index(protocol)][class].load(Ordering::Relaxed);
                    if n == 0 {
                        continue;
                    }
                    let labels = [
                        ("protocol", protocol.as_str()),
                        ("provider", provider),
                        ("status_class", name),
                    ];
                    ConstCounter::new(n).encode(requests.encode_family(&labels)?)?;
                }
            }
        }

        for (name, help, pick) in [
            (
                "upstream_latency",
                "Upstream attempts, from the request until the answer ended",
                (|p: &ProviderMetrics| &p.upstream_latency) as fn(&ProviderMetrics) -> &Histogram,
            ),
            (
                "upstream_ttfb",
                "Upstream attempts, from the request until the status and headers came",
                |p: &ProviderMetrics| &p.ttfb,
            ),
        ] {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            for (provider, entry) in &sorted {
                if *provider == NO_PROVIDER {
                    continue;
                }
                let (sum, count, buckets) = pick(entry).snapshot();
                family
                    .encode_family(&[("provider", *provider)])?
                    .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
            }
        }

        let (sum, count, buckets) = self.metrics.overhead.snapshot();
        encoder
            .encode_descriptor(
                "proxy_overhead",
                "The proxy's own time per client request: its latency less the time spent in upstream attempts",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?
            .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;

        let mut keys = encoder.encode_descriptor(
            "keys",
            "Provider keys in the config in force, by provider and the control plane's state",
            None,
            MetricType::Gauge,
        )?;
        if let Some(config) = self.runtime.load() {
            let mut counts: BTreeMap<&str, [i64; KeyState::ALL.len()]> = BTreeMap::new();
            for provider in config.providers.keys() {
                counts.entry(provider).or_default();
            }
            for key in config.keys.iter() {
                let state = KeyState::ALL
                    .iter()
                    .position(|s| *s == key.state)
                    .unwrap_or_default();
                counts.entry(&key.provider).or_default()[state] += 1;
            }
            for (provider, by_state) in &counts {
                for (state, n) in KeyState::ALL.iter().zip(by_state) {
                    let labels = [("provider", *provider), ("state", state.as_str())];
                    ConstGauge::new(*n).encode(keys.encode_family(&labels)?)?;
                }
            }
        }

        let gauge = |encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64| {
            ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX))
                .encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
        };
        if let Some(config) = self.runtime.load() {
            gauge(
                &mut encoder,
                "key_pool_bytes",
                "Estimated heap bytes of the keys in force, their indexes and key pools (allocator granules counted); divide by the sum of keys for bytes per key",
                (config.keys.heap_bytes() + config.pools.heap_bytes()) as u64,
            )?;
        }
        let counter = |encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64| {
            ConstCounter::new(value).encode(encoder.encode_descriptor(
                name,
                help,
                None,
                MetricType::Counter,
            )?)
        };
        gauge(
            &mut encoder,
            "config_revision",
            "The config revision in force (0 before the first snapshot)",
            self.runtime.applied_revision(),
        )?;
        gauge(
            &mut encoder,
            "log_buffer_depth",
            "Request records held for the control plane: queued, waiting, or sent and not yet acknowledged",
            self.stats.depth(),
        )?;
        counter(
            &mut encoder,
            "log_records_dropped",
            "Request records dropped because the buffer was full",
            self.stats.records_dropped(),
        )?;
        counter(
            &mut encoder,
            "log_records_acked",
            "Request records the control plane acknowledged",
            self.stats.records_acked(),
        )?;
        counter(
            &mut encoder,
            "key_events_dropped",
            "Key events dropped because their queue was full or the control plane was away too long",
            self.stats.key_events_dropped(),
        )?;
        counter(
            &mut encoder,
            "connections_refused",
            "Client connections closed on arrival because max_connections were open",
            self.connections
                .refused
                .load(std::sync::atomic::Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "connections_failed_handshake",
            "Client connections closed before their first request: TLS handshake failed or timed out, or no first byte in time",
            self.connections
                .failed_handshakes
                .load(std::sync::atomic::Ordering::Relaxed),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_bucket_and_sum() {
        let h = Histogram::new(&OVERHEAD_BUCKETS_US);
        h.observe(Duration::from_micros(10));
        h.observe(Duration::from_micros(25));
        h.observe(Duration::from_micros(26));
        h.observe(Duration::from_secs(3));
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(count, 4);
        assert!((sum - 3.000_061).abs() < 1e-9, "{sum}");
        assert_eq!(buckets[0], (25e-6, 2));
        assert_eq!(buckets[1], (50e-6, 1));
        assert_eq!(buckets.last(), Some(&(f64::INFINITY, 1)));
    }

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let metrics = Arc::new(Metrics::default());
        metrics.request(Protocol::OpenAi, Some("oa"), 200);
        metrics.request(Protocol::OpenAi, Some("oa"), 200);
        metrics.request(Protocol::Gemini, None, 401);
        metrics.attempt(
            "oa",
            Duration::from_millis(30),
            Some(Duration::from_millis(7)),
        );
        metrics.overhead(Duration::from_micros(80));
        assert_eq!(metrics.requests(Some("oa"), 2), 2);
        assert_eq!(metrics.requests(None, 4), 1);
        let scrape = Scrape {
            metrics,
            runtime: RuntimeConfigHandle::new(),
            stats: crate::shipper::queues().3,
            connections: Arc::default(),
        };
        let text = scrape.render().unwrap();
        for line in [
            "fulcrum_requests_total{protocol=\"openai\",provider=\"oa\",status_class=\"2xx\"} 2",
            "fulcrum_requests_total{protocol=\"gemini\",provider=\"none\",status_class=\"4xx\"} 1",
            "fulcrum_upstream_latency_seconds_count{provider=\"oa\"} 1",
            "fulcrum_upstream_latency_seconds_bucket{le=\"0.05\",provider=\"oa\"} 1",
            "fulcrum_upstream_ttfb_seconds_bucket{le=\"0.005\",provider=\"oa\"} 0",
            "fulcrum_proxy_overhead_seconds_count 1",
            "fulcrum_config_revision 0",
            "fulcrum_log_buffer_depth 0",
            "fulcrum_log_records_dropped_total 0",
            "fulcrum_key_events_dropped_total 0",
            "fulcrum_connections_refused_total 0",
            "fulcrum_connections_failed_handshake_total 0",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(!text.contains("upstream_latency_seconds_count{provider=\"none\"}"));
    }
}
