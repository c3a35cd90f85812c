//! One client request's way through candidates, keys and attempts.
//!
//! Candidates come from the request (a pinned provider), a route, or every provider that
//! speaks the client's protocol. Each attempt takes the next usable key of a candidate's
//! pool. A retryable failure (429, 401/403, 5xx, network error, first-byte timeout) moves
//! the request to another key, then to the next candidate, up to `max_retries` further
//! attempts. Nothing reaches the client until an attempt has produced its first body
//! chunk, so every failover happens before the first byte.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fulcrum_proto::model::quota::{self, TooMany};
use fulcrum_proto::model::{Key, Provider, ProviderType, RouteStrategy, routing};
use fulcrum_proto::pb;
use fulcrum_protocol::{StreamTranslator, TranslateError};
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};

use crate::balance::strategy::{InFlight, Slot, StrategyState};
use crate::balance::{KeyVerdict, Pick, PoolEntry};
use crate::exchange;
use crate::mock;
use crate::protocol::{Operation, Protocol};
use crate::records::{self, Attempt, AttemptMeter, ErrorClass, RequestLog, Upstream};
use crate::runtime::RuntimeConfig;
use crate::shipper::KeyEvents;
use crate::upstream::{self, Outcome};
use crate::usage::{Usage, UsageScanner};

/// Most bytes of an upstream error body kept and passed on.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Most bytes of a whole (not streamed) answer read for translation.
const MAX_TRANSLATED_BODY: usize = 64 * 1024 * 1024;

/// A client request, as much of it as goes upstream.
#[derive(Debug, Clone)]
pub struct ClientRequest {
    pub protocol: Protocol,
    pub operation: Operation,
    /// Set by `/{provider}/v1/...`.
    pub pinned: Option<String>,
    /// The model the client asked for ("" when the operation has none).
    pub model: String,
    pub stream: bool,
    /// OpenAI clients get a usage chunk at the end of a stream only when they ask.
    pub include_usage: bool,
    pub body: Bytes,
    /// The client headers that travel upstream.
    pub headers: HeaderMap,
    /// The client token's name: sticky routes remember choices per client.
    pub client: Arc<str>,
}

/// One provider to try, and the model to ask it for.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    pub provider: &'a Provider,
    /// The model sent upstream: the route target's, or the client's.
    pub model: &'a str,
}

/// The candidates of a request in the order to try them, and the route that chose them.
#[derive(Debug)]
pub struct Candidates<'a> {
    pub list: Vec<Candidate<'a>>,
    /// The matched route's pattern.
    pub route: Option<&'a str>,
    /// The matched route's pattern, with how long a choice sticks to a client there.
    pub sticky: Option<(&'a str, Duration)>,
}

/// Why a request could not be served. Each variant knows whose fault it is, whether
/// another key may help, and how it looks to the client.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The upstream answered with an error; passed on as it came (our keys masked).
    #[error("upstream answered {status}")]
    Upstream {
        status: StatusCode,
        content_type: Option<HeaderValue>,
        body: Bytes,
        outcome: Outcome,
        /// The protocol the body is written in.
        protocol: Protocol,
    },
    /// No answer: connect error, reset, or no first byte in time.
    #[error("upstream unreachable: {0}")]
    Network(String),
    #[error("no answer from the upstream within {0:?}")]
    FirstByteTimeout(Duration),
    /// Every key that could serve is resting; the first is back in this long.
    #[error("every key is rate limited")]
    AllCooling { retry_after: Duration },
    /// No provider serves the model, or every key is out.
    #[error("{0}")]
    NoCandidate(String),
    #[error("no usable key for {0}")]
    NoUsableKey(String),
    /// The client's request cannot be sent as it is.
    #[error("{0}")]
    BadRequest(String),
    /// A translation between protocols failed: the client's request (400) or the
    /// upstream's answer (502).
    #[error("{0}")]
    Translate(TranslateError),
}

impl ProxyError {
    /// Whether another key or provider may succeed where this attempt failed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ProxyError::Upstream { outcome, .. } => outcome.is_retryable(),
            ProxyError::Network(_) | ProxyError::FirstByteTimeout(_) => true,
            ProxyError::AllCooling { .. }
            | ProxyError::NoCandidate(_)
            | ProxyError::NoUsableKey(_)
            | ProxyError::BadRequest(_)
            | ProxyError::Translate(_) => false,
        }
    }

    /// What kind of failure this is, for request records.
    pub fn error_class(&self) -> ErrorClass {
        match self {
            ProxyError::Upstream { outcome, .. } => match outcome {
                Outcome::ClientError => ErrorClass::Client,
                Outcome::RateLimited { .. } => ErrorClass::RateLimited,
                Outcome::Refused => ErrorClass::Unauthorized,
                Outcome::ServerError | Outcome::Success => ErrorClass::Upstream,
            },
            ProxyError::Network(_) => ErrorClass::Network,
            ProxyError::FirstByteTimeout(_) => ErrorClass::Timeout,
            ProxyError::AllCooling { .. } => ErrorClass::RateLimited,
            ProxyError::NoCandidate(_) | ProxyError::NoUsableKey(_) => ErrorClass::NoCandidate,
            ProxyError::BadRequest(_) => ErrorClass::Client,
            ProxyError::Translate(_) => ErrorClass::Translation,
        }
    }

    /// A bounded excerpt for an error record: the upstream's body (with `secret` masked),
    /// or the message.
    pub fn excerpt(&self, secret: Option<&str>) -> Option<Box<str>> {
        match self {
            ProxyError::Upstream { body, .. } => records::excerpt(body, secret),
            other => records::message_excerpt(&other.to_string()),
        }
    }
}

/// An attempt that produced its first chunk: from here on the request stays on this key.
pub struct Committed {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub first: Bytes,
    /// The rest of the body; `None` when `first` is all of it.
    pub rest: Option<futures::stream::BoxStream<'static, Result<Bytes, upstream::BodyError>>>,
    pub event_stream: bool,
    /// The protocol the upstream answered in.
    pub upstream_protocol: Protocol,
    /// Turns the upstream's events into the client's protocol; `None` passes them through.
    pub translator: Option<Box<dyn StreamTranslator>>,
    /// The attempt's record, written when the answer ends.
    pub attempt: Option<Attempt>,
    /// The upstream's usage, when the answer was read whole here (to be translated).
    pub usage: Option<Usage>,
    pub attempts: u32,
    /// Counts the request in flight at its provider until the answer is delivered.
    pub in_flight: Option<InFlight>,
}

/// The candidates for a request, in the order to try them: the pinned provider, else
/// the plan of the route that matches the model (or of the default without one), keeping
/// only providers that can serve the operation, ordered by the route's strategy, with a
/// client's sticky choice first.
pub fn candidates<'a>(
    config: &'a RuntimeConfig,
    strategies: &StrategyState,
    request: &'a ClientRequest,
) -> Result<Candidates<'a>, ProxyError> {
    let serves = |p: &Provider| {
        exchange::can_serve(
            request.operation,
            request.protocol,
            Protocol::of(p.provider_type),
        )
    };
    if let Some(name) = request.pinned.as_deref() {
        let provider = config
            .providers
            .get(name)
            .ok_or_else(|| ProxyError::NoCandidate(format!("no provider named {name:?}")))?;
        if !serves(provider) {
            return Err(ProxyError::NoCandidate(format!(
                "provider {name:?} is of type {}, which cannot serve {} requests from {} clients",
                provider.provider_type,
                request.operation.as_str(),
                request.protocol.as_str()
            )));
        }
        return Ok(Candidates {
            list: vec![Candidate {
                provider,
                model: &request.model,
            }],
            route: None,
            sticky: None,
        });
    }
    let plan = routing::plan(
        config.routes.values(),
        &config.providers,
        &request.model,
        request.protocol.to_routing(),
    );
    let to_candidate = |c: &routing::PlannedCandidate<'a>| Candidate {
        provider: c.provider,
        model: c.model_to_send,
    };
    let mut list: Vec<Candidate<'a>> = if plan.strategy == RouteStrategy::Priority {
        // The base order is the answer: no strategy state to read (the common case, and
        // the one without a route).
        plan.candidates
            .iter()
            .filter(|c| serves(c.provider))
            .map(to_candidate)
            .collect()
    } else {
        let planned: Vec<&routing::PlannedCandidate<'a>> = plan
            .candidates
            .iter()
            .filter(|c| serves(c.provider))
            .collect();
        let slots: Vec<Slot<'_>> = planned
            .iter()
            .map(|c| Slot {
                provider: &c.provider.name,
                priority: c.priority,
                weight: c.weight,
                price: c
                    .prices
                    .is_known()
                    .then_some(c.prices.input + c.prices.output),
            })
            .collect();
        let route = plan.matched.unwrap_or("");
        strategies
            .order(plan.strategy, route, &slots)
            .into_iter()
            .map(|i| to_candidate(planned[i]))
            .collect()
    };
    if list.is_empty() {
        return Err(ProxyError::NoCandidate(match plan.matched {
            Some(pattern) => format!(
                "the route {pattern:?} for model {:?} names no provider that can serve {} requests from {} clients",
                request.model,
                request.operation.as_str(),
                request.protocol.as_str()
            ),
            None => format!("no provider serves model {:?}", request.model),
        }));
    }
    let sticky = plan.matched.zip(plan.sticky);
    if let Some((route, _)) = sticky
        && let Some(chosen) = strategies.sticky(&request.client, route, now_ms())
        && let Some(at) = list.iter().position(|c| c.provider.name == chosen)
    {
        let candidate = list.remove(at);
        list.insert(0, candidate);
    }
    Ok(Candidates {
        list,
        route: plan.matched,
        sticky,
    })
}

/// What an attempt needs besides the request.
pub struct Attempts<'a> {
    pub config: &'a Arc<RuntimeConfig>,
    pub strategies: &'a StrategyState,
    /// The direct client and one per outbound proxy.
    pub clients: &'a upstream::Clients,
    pub events: &'a KeyEvents,
    /// Where each attempt is recorded.
    pub log: &'a RequestLog,
}

impl Attempts<'_> {
    /// Serves the request from the first candidate key that answers, or says why none did.
    pub async fn run(&self, request: &ClientRequest) -> Result<Committed, ProxyError> {
        let Candidates {
            list: candidates,
            route,
            sticky,
        } = candidates(self.config, self.strategies, request)?;
        if let Some(route) = route {
            self.log.set_route(route);
        }
        let settings = &self.config.settings;
        let max_attempts = settings.max_retries.saturating_add(1);
        let wait_until =
            now_ms() + i64::try_from(settings.wait_budget.as_millis()).unwrap_or(i64::MAX);
        let mut tried: Vec<Arc<Key>> = Vec::new();
        let mut attempts = 0u32;
        let mut last_error: Option<ProxyError> = None;
        loop {
            let mut back_at: Option<i64> = None;
            for candidate in &candidates {
                if candidate.provider.provider_type == ProviderType::Mock {
                    return self.mock(candidate, request, attempts + 1);
                }
                if request.operation == Operation::CountTokens
                    && Protocol::of(candidate.provider.provider_type) == Protocol::OpenAi
                {
                    // OpenAI's API has no count endpoint: the answer is an estimate, made here.
                    let start = self.log.attempt();
                    return match exchange::count_locally(request) {
                        Ok(body) => {
                            let mut answer = local_answer(request, body, attempts + 1);
                            answer.attempt = Some(self.log.committed_attempt(
                                start,
                                Upstream::Local(candidate.provider.name.as_str().into()),
                                AttemptMeter {
                                    status: 200,
                                    ..AttemptMeter::default()
                                },
                            ));
                            Ok(answer)
                        }
                        Err(e) => {
                            self.log.failed_attempt(
                                start,
                                Upstream::Local(candidate.provider.name.as_str().into()),
                                AttemptMeter::default(),
                                e.error_class(),
                                e.excerpt(None),
                            );
                            Err(e)
                        }
                    };
                }
                let Some(pool) = self.config.pools.get(&candidate.provider.name) else {
                    continue;
                };
                loop {
                    if attempts >= max_attempts {
                        return Err(last_error.unwrap_or_else(|| {
                            ProxyError::NoUsableKey(candidate.provider.name.clone())
                        }));
                    }
                    match pool.pick_for(now_ms(), &tried, candidate.model) {
                        Pick::Key(entry) => {
                            attempts += 1;
                            tried.push(Arc::clone(&entry.key));
                            let in_flight = self.strategies.start(&candidate.provider.name);
                            let started = std::time::Instant::now();
                            let start = self.log.attempt_at(started);
                            let mut meter = AttemptMeter::default();
                            let upstream = Upstream::Key(Arc::clone(&entry.key));
                            match self.attempt(candidate, entry, request, &mut meter).await {
                                Ok(mut committed) => {
                                    in_flight.record_latency(started.elapsed());
                                    if let Some((route, keep)) = sticky {
                                        let now = now_ms();
                                        let until = now.saturating_add(
                                            i64::try_from(keep.as_millis()).unwrap_or(i64::MAX),
                                        );
                                        self.strategies.stick(
                                            &request.client,
                                            route,
                                            &candidate.provider.name,
                                            until,
                                            now,
                                        );
                                    }
                                    committed.attempts = attempts;
                                    committed.in_flight = Some(in_flight);
                                    committed.attempt =
                                        Some(self.log.committed_attempt(start, upstream, meter));
                                    return Ok(committed);
                                }
                                Err(e) => {
                                    self.log.failed_attempt(
                                        start,
                                        upstream,
                                        meter,
                                        e.error_class(),
                                        e.excerpt(Some(entry.key.secret.expose())),
                                    );
                                    if !e.is_retryable() {
                                        return Err(e);
                                    }
                                    tracing::debug!(provider = %candidate.provider.name, key = %entry.key.id, error = %e, "attempt failed; trying another key");
                                    last_error = Some(e);
                                }
                            }
                        }
                        Pick::AllCooling { back_at_ms } => {
                            back_at = Some(back_at.map_or(back_at_ms, |b| b.min(back_at_ms)));
                            break;
                        }
                        Pick::Exhausted => break,
                    }
                }
            }
            let now = now_ms();
            match back_at {
                // Wait for the first key to come back when that fits the wait budget.
                Some(at) if at <= wait_until && attempts < max_attempts => {
                    tokio::time::sleep(Duration::from_millis(
                        u64::try_from(at - now).unwrap_or(0) + 1,
                    ))
                    .await;
                    // Keys that rested are worth another try now.
                    tried.clear();
                }
                Some(at) => {
                    let retry_after =
                        Duration::from_millis(u64::try_from(at - now).unwrap_or(0).max(1_000));
                    return Err(match last_error {
                        Some(e @ ProxyError::Upstream { .. })
                            if !matches!(
                                e,
                                ProxyError::Upstream {
                                    outcome: Outcome::RateLimited { .. },
                                    ..
                                }
                            ) =>
                        {
                            e
                        }
                        _ => ProxyError::AllCooling { retry_after },
                    });
                }
                None => {
                    return Err(last_error.unwrap_or_else(|| {
                        let names: Vec<&str> = candidates
                            .iter()
                            .map(|c| c.provider.name.as_str())
                            .collect();
                        ProxyError::NoUsableKey(names.join(", "))
                    }));
                }
            }
        }
    }

    /// A `mock` provider's answer, made here in OpenAI's shape and then translated for the
    /// client like any upstream's.
    fn mock(
        &self,
        candidate: &Candidate<'_>,
        request: &ClientRequest,
        attempts: u32,
    ) -> Result<Committed, ProxyError> {
        let start = self.log.attempt();
        let upstream = || Upstream::Local(candidate.provider.name.as_str().into());
        match self.mock_answer(candidate, request, attempts) {
            Ok(mut committed) => {
                committed.attempt = Some(self.log.committed_attempt(
                    start,
                    upstream(),
                    AttemptMeter {
                        status: 200,
                        ..AttemptMeter::default()
                    },
                ));
                Ok(committed)
            }
            Err(e) => {
                self.log.failed_attempt(
                    start,
                    upstream(),
                    AttemptMeter::default(),
                    e.error_class(),
                    e.excerpt(None),
                );
                Err(e)
            }
        }
    }

    fn mock_answer(
        &self,
        candidate: &Candidate<'_>,
        request: &ClientRequest,
        attempts: u32,
    ) -> Result<Committed, ProxyError> {
        let outbound = exchange::outbound(
            request,
            Protocol::OpenAi,
            candidate.model,
            &self.config.settings,
        )?;
        let answer = mock::answer(
            request.operation,
            &candidate.provider.name,
            outbound.model,
            outbound.stream,
            &outbound.body,
            now_ms() / 1000,
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(answer.content_type),
        );
        let mut usage = None;
        let (first, rest, event_stream) = match answer.body {
            mock::MockBody::Whole(body) => {
                let body = if request.protocol == Protocol::OpenAi {
                    body
                } else {
                    usage = Some(UsageScanner::whole(Protocol::OpenAi, &body));
                    exchange::inbound_whole(request, Protocol::OpenAi, &body)?
                };
                (body, None, false)
            }
            mock::MockBody::Events(events) => {
                let mut events = events.into_iter();
                let first = events.next().unwrap_or_default();
                let rest: Vec<Result<Bytes, upstream::BodyError>> = events.map(Ok).collect();
                (first, Some(futures::stream::iter(rest).boxed()), true)
            }
        };
        Ok(Committed {
            status: StatusCode::OK,
            headers,
            first,
            rest,
            event_stream,
            upstream_protocol: Protocol::OpenAi,
            translator: event_stream
                .then(|| exchange::stream_translator(request, Protocol::OpenAi))
                .flatten(),
            attempt: None,
            usage,
            attempts,
            in_flight: None,
        })
    }

    /// One upstream call with one key; `meter` learns what the record needs as it goes.
    async fn attempt(
        &self,
        candidate: &Candidate<'_>,
        entry: &PoolEntry,
        request: &ClientRequest,
        meter: &mut AttemptMeter,
    ) -> Result<Committed, ProxyError> {
        let settings = &self.config.settings;
        let provider = candidate.provider;
        let key = &entry.key;
        let upstream_protocol = Protocol::of(provider.provider_type);
        if candidate.model != request.model {
            meter.model_served = Some(candidate.model.into());
        }
        let outbound = exchange::outbound(request, upstream_protocol, candidate.model, settings)?;
        if outbound.model != candidate.model {
            meter.model_served = Some(outbound.model.into());
        }
        let uri = upstream::uri(provider, request.operation, outbound.model, outbound.stream)
            .map_err(ProxyError::BadRequest)?;
        // Not the key's fault, and another key may go through another proxy: retryable,
        // without a failure counted on the key.
        let client = self
            .clients
            .route(provider.proxy_for(key), &uri)
            .map_err(|e| ProxyError::Network(format!("outbound proxy: {e}")))?;
        let has_body = request.operation.has_body();
        // Built in a block that ends before the await: a request that a borrow touched keeps
        // its 256 bytes in the attempt's future across every await after it otherwise.
        let sent = {
            let mut upstream_request = http::Request::new(http_body_util::Full::new(if has_body {
                outbound.body
            } else {
                Bytes::new()
            }));
            *upstream_request.method_mut() = if has_body { Method::POST } else { Method::GET };
            *upstream_request.uri_mut() = uri;
            let headers = upstream_request.headers_mut();
            headers.clone_from(&request.headers);
            if has_body && upstream_protocol != request.protocol {
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
            }
            // The provider's own headers first, so that none can replace the credentials
            // (reserved names are refused when the provider is stored, and again here by order).
            for (name, value) in &provider.headers {
                headers.insert(name.clone(), value.clone());
            }
            upstream::set_credentials(provider.provider_type, key.secret.expose(), headers)
                .map_err(ProxyError::BadRequest)?;
            headers.insert(
                header::USER_AGENT,
                HeaderValue::from_static(concat!("fulcrum/", env!("CARGO_PKG_VERSION"))),
            );
            client.request(upstream_request)
        };
        let started = tokio::time::Instant::now();
        let deadline = started + settings.first_byte_timeout;
        let response = match tokio::time::timeout_at(deadline, sent).await {
            Err(_) => {
                self.fail(entry, None, "no response in time");
                return Err(ProxyError::FirstByteTimeout(settings.first_byte_timeout));
            }
            Ok(Err(e)) => {
                let what = if e.is_connect() {
                    "connect error"
                } else {
                    "request failed"
                };
                let detail = network_detail(what, &e);
                self.fail(entry, None, &detail);
                return Err(ProxyError::Network(detail));
            }
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        meter.headers_at = Some(std::time::Instant::now());
        meter.status = status.as_u16();
        let outcome = Outcome::classify(status, response.headers());
        if outcome != Outcome::Success {
            let now = now_ms();
            let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
            // Read first: a 429's body tells a short rate limit from a used-up quota.
            let body = read_bounded(response, deadline).await;
            match outcome {
                Outcome::RateLimited { retry_after } => {
                    let wait = retry_after.unwrap_or(settings.cooldown_default);
                    let wait_ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
                    let asked_ms = if retry_after.is_some() { wait_ms } else { 0 };
                    match quota::classify_429(provider.provider_type, &body) {
                        TooMany::RateLimited => {
                            entry.local.record_rate_limited(now.saturating_add(wait_ms));
                            self.report(
                                key,
                                pb::KeyEventKind::RateLimited,
                                asked_ms,
                                Some(status),
                                "429 from upstream",
                            );
                        }
                        TooMany::QuotaExhausted { daily, per_model } => {
                            // A per-model quota leaves the key to other models: only the
                            // control plane's decision (pushed back within moments) skips
                            // it for this model; this request moves to another key.
                            if !per_model {
                                entry.local.record_rate_limited(now.saturating_add(wait_ms));
                            }
                            self.events.report(pb::KeyEvent {
                                key_id: key.id.clone(),
                                kind: pb::KeyEventKind::QuotaExhausted as i32,
                                at_unix_ms: now,
                                retry_after_ms: asked_ms,
                                http_status: u32::from(status.as_u16()),
                                detail: "quota used up (429)".into(),
                                model: candidate.model.to_string(),
                                per_model,
                                daily,
                            });
                        }
                    }
                }
                Outcome::Refused => {
                    entry.local.record_refused(now);
                    self.report(
                        key,
                        pb::KeyEventKind::Unauthorized,
                        0,
                        Some(status),
                        "upstream refused the key",
                    );
                }
                Outcome::ServerError => {
                    self.fail(entry, Some(status), "server error from upstream")
                }
                Outcome::ClientError | Outcome::Success => {}
            }
            let masked = match std::str::from_utf8(&body) {
                Ok(text) => Bytes::from(upstream::mask_in(text, key.secret.expose())),
                Err(_) => body,
            };
            return Err(ProxyError::Upstream {
                status,
                content_type,
                body: masked,
                outcome,
                protocol: upstream_protocol,
            });
        }
        let mut headers = HeaderMap::new();
        upstream::copy_headers(
            &upstream::FORWARDED_RESPONSE_HEADERS,
            response.headers(),
            &mut headers,
        );
        let event_stream = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        let length = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let mut body = response.into_body();
        // The first chunk decides: an upstream that sends headers and then stalls or dies
        // is still a failed attempt, because the client has seen nothing yet.
        let first = match tokio::time::timeout_at(deadline, upstream::next_data(&mut body)).await {
            Err(_) => {
                self.fail(entry, None, "headers but no body in time");
                return Err(ProxyError::FirstByteTimeout(settings.first_byte_timeout));
            }
            Ok(Some(Err(e))) => {
                let detail = network_detail("connection broken while reading the answer", &*e);
                self.fail(entry, None, &detail);
                return Err(ProxyError::Network(detail));
            }
            Ok(Some(Ok(first))) => Some(first),
            Ok(None) => None,
        };
        let report_use_every_ms = settings
            .probe_idle_recheck
            .map_or(0, use_report_interval_ms);
        if let KeyVerdict::Success {
            reset_failures,
            report_use,
        } = entry.local.record_success(now_ms(), report_use_every_ms)
            && (reset_failures || report_use)
        {
            self.report(key, pb::KeyEventKind::Success, 0, Some(status), "");
        }
        let first = first.unwrap_or_default();
        // A small answer often arrives whole in its first chunk: then it goes out as one
        // body with a length instead of a stream to poll to its end.
        let whole = !event_stream && length == Some(first.len() as u64);
        let mut committed = Committed {
            status,
            headers,
            first,
            // Only a body with more to come becomes a stream (a boxed one).
            rest: (!whole).then(|| upstream::data_stream(body)),
            event_stream,
            upstream_protocol,
            translator: None,
            attempt: None,
            usage: None,
            attempts: 0,
            in_flight: None,
        };
        if upstream_protocol != request.protocol {
            if event_stream {
                committed.translator = exchange::stream_translator(request, upstream_protocol);
            } else {
                // A whole answer is translated whole: read it to its end first.
                let body = read_whole(&mut committed, settings.idle_timeout).await?;
                committed.usage = Some(UsageScanner::whole(upstream_protocol, &body));
                committed.first = exchange::inbound_whole(request, upstream_protocol, &body)?;
                committed.rest = None;
                committed.headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
            }
        }
        Ok(committed)
    }

    /// Counts a failure of the key here and tells the control plane.
    fn fail(&self, entry: &PoolEntry, status: Option<StatusCode>, detail: &str) {
        let verdict = entry
            .local
            .record_failure(now_ms(), self.config.settings.max_failures);
        if let KeyVerdict::Failed { now_out: true } = verdict {
            tracing::warn!(key = %entry.key.id, provider = %entry.key.provider, "key out after consecutive failures");
        }
        self.report(&entry.key, pb::KeyEventKind::Failure, 0, status, detail);
    }

    /// Tells the control plane; `status` is `None` when there was no HTTP answer.
    fn report(
        &self,
        key: &Key,
        kind: pb::KeyEventKind,
        retry_after_ms: i64,
        status: Option<StatusCode>,
        detail: &str,
    ) {
        self.events.report(pb::KeyEvent {
            key_id: key.id.clone(),
            kind: kind as i32,
            at_unix_ms: now_ms(),
            retry_after_ms,
            http_status: status.map_or(0, |s| u32::from(s.as_u16())),
            detail: detail.to_string(),
            ..Default::default()
        });
    }
}

/// How often a busy key's use is reported: often enough that the control plane's idle
/// re-check (`ttl`) never finds it idle, rarely enough to cost nothing (6 h for the
/// default day).
fn use_report_interval_ms(ttl: Duration) -> i64 {
    i64::try_from((ttl / 4).as_millis())
        .unwrap_or(i64::MAX)
        .max(100)
}

/// A network error in words that never include a URL with secrets or a key: `what`
/// happened, and the innermost cause.
fn network_detail(what: &str, e: &(dyn std::error::Error + 'static)) -> String {
    let mut source = e.source();
    let mut cause = String::new();
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if cause.is_empty() {
        what.to_string()
    } else {
        format!("{what}: {cause}")
    }
}

/// The rest of a committed answer, appended to its first chunk.
async fn read_whole(
    committed: &mut Committed,
    idle_timeout: Duration,
) -> Result<Bytes, ProxyError> {
    let Some(mut rest) = committed.rest.take() else {
        return Ok(std::mem::take(&mut committed.first));
    };
    let mut out = std::mem::take(&mut committed.first).to_vec();
    loop {
        match tokio::time::timeout(idle_timeout, rest.next()).await {
            Ok(Some(Ok(chunk))) => {
                if out.len() + chunk.len() > MAX_TRANSLATED_BODY {
                    return Err(ProxyError::Network(format!(
                        "the upstream answer is larger than {MAX_TRANSLATED_BODY} bytes"
                    )));
                }
                out.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(Bytes::from(out)),
            Ok(Some(Err(e))) => {
                return Err(ProxyError::Network(network_detail(
                    "connection broken while reading the answer",
                    &*e,
                )));
            }
            Err(_) => {
                return Err(ProxyError::Network(format!(
                    "the upstream sent nothing for {idle_timeout:?}"
                )));
            }
        }
    }
}

/// An answer made here rather than by an upstream.
fn local_answer(request: &ClientRequest, body: Bytes, attempts: u32) -> Committed {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        http::HeaderName::from_static("x-fulcrum-token-count"),
        HeaderValue::from_static("estimated"),
    );
    Committed {
        status: StatusCode::OK,
        headers,
        first: body,
        rest: None,
        event_stream: false,
        upstream_protocol: request.protocol,
        translator: None,
        attempt: None,
        usage: None,
        attempts,
        in_flight: None,
    }
}

/// Reads at most `MAX_ERROR_BODY` bytes of an error answer before `deadline`.
async fn read_bounded(
    response: http::Response<upstream::ResponseBody>,
    deadline: tokio::time::Instant,
) -> Bytes {
    let mut body = response.into_body();
    let mut out = Vec::new();
    while out.len() < MAX_ERROR_BODY {
        match tokio::time::timeout_at(deadline, upstream::next_data(&mut body)).await {
            Ok(Some(Ok(chunk))) => out.extend_from_slice(&chunk),
            _ => break,
        }
    }
    out.truncate(MAX_ERROR_BODY);
    Bytes::from(out)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
