//! `AdminService`: operators' reads and writes. Each write is one [`Store::commit`].

use std::collections::{BTreeSet, HashMap};

use fulcrum_proto::model::routing::{self, MAX_STICKY_SECS};
use fulcrum_proto::model::{
    self, ClientProtocol, KeyState, ProviderType, RouteStrategy, key_id, mask_proxy, mask_secret,
    outbound, settings, token_hash, validate_base_url, validate_key_secret, validate_model_pattern,
    validate_provider_name, validate_route_pattern, validate_token_name,
};
use fulcrum_proto::pb;
use fulcrum_proto::pb::admin_service_server::AdminService;
use tonic::{Request, Response, Status};

use crate::discovery::NodeRegistry;
use crate::error::Error;
use crate::probe::Prober;
use crate::snapshot::effective_settings;
use crate::store::{Store, TreeId, Tx, TxResult, abort, now_unix_ms, random_hex};
use crate::transitions::{self, Change, SOURCE_OPERATOR};

/// Priority given to providers created without one.
const DEFAULT_PRIORITY: u32 = 100;
/// Page size of `ListKeys` when the caller gives none, and the most it may ask for.
const DEFAULT_PAGE_SIZE: u32 = 100;
const MAX_PAGE_SIZE: u32 = 10_000;
/// Page size of `ExportKeys` when the caller gives none.
const DEFAULT_EXPORT_PAGE_SIZE: u32 = 1_000;

/// Serves `AdminService` from the store.
#[derive(Clone)]
pub struct Admin {
    store: Store,
    nodes: NodeRegistry,
    /// The validation scheduler, for `ValidateKeys` and `AddKeys { validate }`; without
    /// one those answer `FAILED_PRECONDITION`.
    prober: Option<Prober>,
}

impl Admin {
    pub fn new(store: Store, nodes: NodeRegistry) -> Self {
        Self {
            store,
            nodes,
            prober: None,
        }
    }

    /// Serves key validation with this scheduler.
    pub fn with_prober(mut self, prober: Prober) -> Self {
        self.prober = Some(prober);
        self
    }

    /// Queues the probes a write planned.
    fn plan(&self, plans: Vec<(String, i64)>) {
        if let Some(prober) = &self.prober {
            for (id, at) in plans {
                prober.queue().schedule(&id, at);
            }
        }
    }

    fn prober(&self) -> Result<&Prober, Error> {
        self.prober.as_ref().ok_or_else(|| {
            Error::FailedPrecondition("this control plane runs no validation scheduler".into())
        })
    }

    /// Runs a blocking read off the async runtime.
    async fn read<R: Send + 'static>(
        &self,
        read: impl FnOnce(&Store) -> Result<R, Error> + Send + 'static,
    ) -> Result<R, Status> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || read(&store))
            .await
            .map_err(|e| Error::Internal(format!("store read task failed: {e}")))?
            .map_err(Status::from)
    }
}

/// The effective settings, typed, for writes that plan probes.
fn current_settings(store: &Store) -> Result<model::Settings, Error> {
    Ok(model::Settings::from_values(&effective_settings(store)?)?)
}

/// The keys a `ValidateKeys` request selects: (to probe, disabled ones skipped).
fn validation_targets(
    store: &Store,
    req: &pb::ValidateKeysRequest,
) -> Result<(Vec<pb::ProviderKey>, u64), Error> {
    let by_state = req.state != 0;
    let chosen = [!req.ids.is_empty(), by_state, req.all]
        .iter()
        .filter(|c| **c)
        .count();
    if chosen != 1 {
        return Err(Error::Invalid(
            "name the keys to validate: ids, a state, or all (exactly one)".into(),
        ));
    }
    let provider = req.provider.trim();
    let provider = (!provider.is_empty()).then_some(provider);
    if let Some(p) = provider
        && store.get::<pb::Provider>(TreeId::Providers, p)?.is_none()
    {
        return Err(Error::not_found("provider", p));
    }
    let keys = if !req.ids.is_empty() {
        let ids = checked_ids(&req.ids)?;
        let mut keys = Vec::with_capacity(ids.len());
        let mut missing = Vec::new();
        for id in &ids {
            match store.get::<pb::ProviderKey>(TreeId::Keys, id)? {
                Some(key) if provider.is_none_or(|p| p == key.provider) => keys.push(key),
                Some(_) => {}
                None => missing.push(id.as_str()),
            }
        }
        if !missing.is_empty() {
            let noun = if missing.len() == 1 { "key" } else { "keys" };
            return Err(Error::NotFound {
                kind: noun,
                name: missing.join(", "),
            });
        }
        keys
    } else {
        let state = if by_state {
            Some(
                KeyState::from_pb(req.state)
                    .ok_or_else(|| Error::Invalid(format!("unknown key state {}", req.state)))?,
            )
        } else {
            None
        };
        if state == Some(KeyState::Disabled) {
            return Err(Error::Invalid(
                "disabled keys are never probed; enable them first".into(),
            ));
        }
        store.keys_page(provider, state, None, usize::MAX)?.0
    };
    let (disabled, keys): (Vec<_>, Vec<_>) = keys
        .into_iter()
        .partition(|k| k.state == pb::KeyState::Disabled as i32);
    Ok((keys, disabled.len() as u64))
}

type ValidateStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<pb::ValidateKeysResponse, Status>> + Send>,
>;

/// The revision a write left the store at: its own, or the current one if it changed nothing.
fn revision_after(store: &Store, revision: Option<u64>) -> u64 {
    revision.unwrap_or_else(|| store.revision())
}

fn provider_type(value: i32) -> Result<ProviderType, Error> {
    ProviderType::from_pb(value).ok_or_else(|| {
        let names: Vec<&str> = ProviderType::ALL.iter().map(|t| t.as_str()).collect();
        Error::Invalid(format!(
            "provider type is required; one of {}",
            names.join(", ")
        ))
    })
}

fn checked_base_url(provider_type: ProviderType, url: &str) -> Result<String, Error> {
    let url = url.trim();
    if url.is_empty() {
        return Ok(provider_type.default_base_url().to_string());
    }
    validate_base_url(url)?;
    Ok(url.trim_end_matches('/').to_string())
}

/// A key as admin answers show it: never with its secret, its proxy's password masked.
fn redact_key(mut key: pb::ProviderKey) -> pb::ProviderKey {
    key.secret.clear();
    if !key.proxy.is_empty() {
        key.proxy = mask_proxy(&key.proxy);
    }
    key.secret_sealed.clear();
    key.secret_key_id.clear();
    key
}

/// A provider as admin answers show it: proxy passwords and the values of secret-looking
/// headers masked. The discovery stream carries them whole.
fn redact_provider(mut provider: pb::Provider) -> pb::Provider {
    for proxy in &mut provider.proxies {
        *proxy = mask_proxy(proxy);
    }
    for header in &mut provider.headers {
        header.value = outbound::shown_header_value(&header.name, &header.value);
    }
    provider
}

/// How many of a provider's keys go through each proxy, with the assignment both planes
/// use (`model::Provider::proxy_for`). Empty when none does.
fn proxy_key_counts(
    store: &Store,
    provider: &pb::Provider,
) -> Result<Vec<pb::ProxyKeyCount>, Error> {
    // Stored proxies were checked on the way in; one that no longer parses counts as
    // direct rather than failing the read.
    let proxies: Vec<model::ProxyUrl> = provider
        .proxies
        .iter()
        .filter_map(|p| model::ProxyUrl::parse(p).ok())
        .collect();
    // (identity, masked, assigned, pinned), provider proxies first.
    let mut counts: Vec<(String, String, u64, u64)> = proxies
        .iter()
        .map(|p| (p.identity(), p.masked(), 0, 0))
        .collect();
    let mut direct = 0u64;
    store.visit_keys(|key| {
        if key.provider != provider.name {
            return;
        }
        let pinned = (!key.proxy.is_empty())
            .then(|| model::ProxyUrl::parse(&key.proxy).ok())
            .flatten();
        let (proxy, is_pinned) = match &pinned {
            Some(p) => (Some(p), true),
            None => (model::assign_proxy(&key.id, &proxies), false),
        };
        let Some(proxy) = proxy else {
            direct += 1;
            return;
        };
        let identity = proxy.identity();
        let slot = match counts.iter().position(|c| c.0 == identity) {
            Some(slot) => slot,
            None => {
                counts.push((identity, proxy.masked(), 0, 0));
                counts.len() - 1
            }
        };
        if is_pinned {
            counts[slot].3 += 1;
        } else {
            counts[slot].2 += 1;
        }
    })?;
    if counts.is_empty() {
        return Ok(Vec::new());
    }
    let mut out: Vec<pb::ProxyKeyCount> = counts
        .into_iter()
        .map(|(_, proxy, assigned, pinned)| pb::ProxyKeyCount {
            proxy,
            assigned,
            pinned,
        })
        .collect();
    if direct > 0 {
        out.push(pb::ProxyKeyCount {
            proxy: String::new(),
            assigned: direct,
            pinned: 0,
        });
    }
    Ok(out)
}

/// Checked proxies, normalised, as the store keeps them.
fn checked_proxies(raw: &[String]) -> Result<Vec<String>, Error> {
    Ok(outbound::parse_proxies(raw)?
        .iter()
        .map(|p| p.expose().to_string())
        .collect())
}

/// A key's pinned proxy, checked and normalised as the store keeps it; empty stays empty
/// (no pin). `AddKeys` and `SetKeyProxy` share it so a pin is accepted the same either way.
fn checked_key_proxy(raw: &str) -> Result<String, Error> {
    match raw.trim() {
        "" => Ok(String::new()),
        raw => Ok(model::ProxyUrl::parse(raw)?.expose().to_string()),
    }
}

/// Checked headers, names lowercased, values trimmed, as the store keeps them.
fn checked_headers(raw: &[pb::UpstreamHeader]) -> Result<Vec<pb::UpstreamHeader>, Error> {
    let parsed =
        outbound::parse_upstream_headers(raw.iter().map(|h| (h.name.as_str(), h.value.as_str())))?;
    Ok(parsed
        .into_iter()
        .map(|(name, value)| pb::UpstreamHeader {
            name: name.as_str().to_string(),
            // Checked to be visible ASCII by the parse.
            value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
        })
        .collect())
}

/// A `ListKeys`/`ExportKeys` page size and start, checked.
fn page_request(
    page_size: u32,
    default: u32,
    page_token: &str,
) -> Result<(usize, Option<String>), Error> {
    let limit = match page_size {
        0 => default,
        n => n.min(MAX_PAGE_SIZE),
    } as usize;
    let after = match page_token {
        "" => None,
        token if token.len() == 16 && token.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Some(token.to_string())
        }
        token => return Err(Error::Invalid(format!("invalid page token {token:?}"))),
    };
    Ok((limit, after))
}

fn state_filter(state: i32) -> Result<Option<KeyState>, Error> {
    match state {
        0 => Ok(None),
        n => KeyState::from_pb(n)
            .map(Some)
            .ok_or_else(|| Error::Invalid(format!("unknown key state {n}"))),
    }
}

/// A key as admin answers show it, with the scheduler's view of it: next probe, last
/// success, failed probes in a row.
fn shown_key(store: &Store, key: pb::ProviderKey) -> Result<pb::ProviderKey, Error> {
    let schedule: pb::KeySchedule = store.get(TreeId::KeySchedule, &key.id)?.unwrap_or_default();
    let mut key = redact_key(key);
    key.next_probe_unix_ms = schedule.next_probe_unix_ms;
    key.last_success_unix_ms = schedule.last_success_unix_ms;
    key.failures = schedule.attempts;
    Ok(key)
}

fn key_counts(counts: std::collections::BTreeMap<KeyState, u64>) -> Vec<pb::KeyStateCount> {
    counts
        .into_iter()
        .map(|(state, count)| pb::KeyStateCount {
            state: state.to_pb() as i32,
            count,
        })
        .collect()
}

fn setting_info(name: &str, value: &str) -> Result<pb::SettingInfo, Error> {
    let spec = settings::spec(name)?;
    Ok(pb::SettingInfo {
        name: spec.name.to_string(),
        value: value.to_string(),
        default_value: spec.default.to_string(),
        description: spec.description.to_string(),
    })
}

/// Unique ids in the order given; empty or malformed ids are refused.
fn checked_ids(ids: &[String]) -> Result<Vec<String>, Error> {
    if ids.is_empty() {
        return Err(Error::Invalid("no key ids given".into()));
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let id = id.trim().to_ascii_lowercase();
        if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::Invalid(format!(
                "invalid key id {id:?}: key ids are 16 hex characters"
            )));
        }
        if seen.insert(id.clone()) {
            out.push(id);
        }
    }
    Ok(out)
}

/// Loads every key named, or aborts with the ids that do not exist.
fn keys_or_not_found(tx: &Tx<'_>, ids: &[String]) -> TxResult<Vec<pb::ProviderKey>> {
    let mut keys = Vec::with_capacity(ids.len());
    let mut missing = Vec::new();
    for id in ids {
        match tx.get::<pb::ProviderKey>(TreeId::Keys, id)? {
            Some(key) => keys.push(key),
            None => missing.push(id.as_str()),
        }
    }
    if !missing.is_empty() {
        let noun = if missing.len() == 1 { "key" } else { "keys" };
        return abort(Error::NotFound {
            kind: noun,
            name: missing.join(", "),
        });
    }
    Ok(keys)
}

/// Sets the state of every key named, with a history entry each; returns how many
/// changed. A disabled key has no probe planned; an enabled one starts its backoff over.
fn set_key_states(
    tx: &Tx<'_>,
    ids: &[String],
    state: KeyState,
    reason: &str,
    settings: &model::Settings,
) -> TxResult<(u64, Vec<(String, i64)>)> {
    let mut changed = 0;
    let mut plans = Vec::new();
    for mut key in keys_or_not_found(tx, ids)? {
        if key.state == state.to_pb() as i32 && key.state_reason == reason {
            continue;
        }
        transitions::apply(tx, &mut key, &Change::new(state, reason), SOURCE_OPERATOR)?;
        if let Some(next) =
            crate::probe::reschedule(tx, &key, settings, crate::probe::Attempt::Reset)?
        {
            plans.push((key.id.clone(), next));
        }
        changed += 1;
    }
    Ok((changed, plans))
}

/// What the request says about one input line of `AddKeys`, before the store is read.
enum Line {
    Done(pb::AddKeyResult),
    Candidate {
        line: u32,
        id: String,
        secret: String,
    },
}

fn classify_lines(provider: &str, lines: &[String]) -> Vec<Line> {
    let mut first_seen: HashMap<String, u32> = HashMap::with_capacity(lines.len());
    let mut out = Vec::with_capacity(lines.len());
    for (index, raw) in lines.iter().enumerate() {
        let line = u32::try_from(index + 1).unwrap_or(u32::MAX);
        let secret = raw.trim();
        let result = |outcome: pb::AddKeyOutcome, id: &str, masked: String, message: String| {
            Line::Done(pb::AddKeyResult {
                line,
                outcome: outcome as i32,
                id: id.to_string(),
                masked,
                message,
            })
        };
        if secret.is_empty() || secret.starts_with('#') {
            out.push(result(
                pb::AddKeyOutcome::Skipped,
                "",
                String::new(),
                String::new(),
            ));
            continue;
        }
        if let Err(why) = validate_key_secret(secret) {
            out.push(result(
                pb::AddKeyOutcome::Invalid,
                "",
                mask_secret(secret),
                why,
            ));
            continue;
        }
        let id = key_id(provider, secret);
        if let Some(first) = first_seen.get(&id) {
            let message = format!("same key as line {first}");
            out.push(result(
                pb::AddKeyOutcome::Duplicate,
                &id,
                mask_secret(secret),
                message,
            ));
            continue;
        }
        first_seen.insert(id.clone(), line);
        out.push(Line::Candidate {
            line,
            id,
            secret: secret.to_string(),
        });
    }
    out
}

#[tonic::async_trait]
impl AdminService for Admin {
    async fn create_provider(
        &self,
        request: Request<pb::CreateProviderRequest>,
    ) -> Result<Response<pb::CreateProviderResponse>, Status> {
        let req = request.into_inner();
        let name = req.name.trim().to_string();
        validate_provider_name(&name).map_err(Error::from)?;
        let provider_type = provider_type(req.r#type)?;
        let base_url = checked_base_url(provider_type, &req.base_url)?;
        let priority = if req.priority == 0 {
            DEFAULT_PRIORITY
        } else {
            req.priority
        };
        let weight = req.weight.max(1);
        let proxies = checked_proxies(&req.proxies)?;
        let headers = checked_headers(&req.headers)?;
        let (provider, revision) = self
            .store
            .commit(move |tx| {
                if tx.contains(TreeId::Providers, &name)? {
                    return abort(Error::already_exists("provider", &name));
                }
                let provider = pb::Provider {
                    name: name.clone(),
                    r#type: provider_type.to_pb() as i32,
                    base_url: base_url.clone(),
                    priority,
                    weight,
                    created_unix_ms: tx.now_unix_ms(),
                    updated_unix_ms: tx.now_unix_ms(),
                    proxies: proxies.clone(),
                    headers: headers.clone(),
                };
                tx.put(TreeId::Providers, &name, &provider)?;
                Ok(provider)
            })
            .await?;
        tracing::info!(provider = %provider.name, r#type = %provider_type, ?revision, "provider created");
        Ok(Response::new(pb::CreateProviderResponse {
            provider: Some(redact_provider(provider)),
            revision: revision_after(&self.store, revision),
        }))
    }

    async fn update_provider(
        &self,
        request: Request<pb::UpdateProviderRequest>,
    ) -> Result<Response<pb::UpdateProviderResponse>, Status> {
        let req = request.into_inner();
        if let Some(url) = req.base_url.as_deref().filter(|u| !u.trim().is_empty()) {
            validate_base_url(url.trim()).map_err(Error::from)?;
        }
        if req.weight == Some(0) {
            return Err(Error::Invalid("weight must be at least 1".into()).into());
        }
        let proxies = req
            .set_proxies
            .then(|| checked_proxies(&req.proxies))
            .transpose()?;
        let headers = req
            .set_headers
            .then(|| checked_headers(&req.headers))
            .transpose()?;
        let (provider, revision) = self
            .store
            .commit(move |tx| {
                let Some(mut provider) = tx.get::<pb::Provider>(TreeId::Providers, &req.name)?
                else {
                    return abort(Error::not_found("provider", &req.name));
                };
                let provider_type = provider_type(provider.r#type).or_else(abort)?;
                if let Some(url) = &req.base_url {
                    provider.base_url = checked_base_url(provider_type, url).or_else(abort)?;
                }
                if let Some(priority) = req.priority {
                    provider.priority = priority;
                }
                if let Some(weight) = req.weight {
                    provider.weight = weight;
                }
                if let Some(proxies) = &proxies {
                    provider.proxies.clone_from(proxies);
                }
                if let Some(headers) = &headers {
                    provider.headers.clone_from(headers);
                }
                provider.updated_unix_ms = tx.now_unix_ms();
                tx.put(TreeId::Providers, &req.name, &provider)?;
                Ok(provider)
            })
            .await?;
        Ok(Response::new(pb::UpdateProviderResponse {
            provider: Some(redact_provider(provider)),
            revision: revision_after(&self.store, revision),
        }))
    }

    async fn get_provider(
        &self,
        request: Request<pb::GetProviderRequest>,
    ) -> Result<Response<pb::GetProviderResponse>, Status> {
        let name = request.into_inner().name;
        let response = self
            .read(move |store| {
                let provider = store
                    .get::<pb::Provider>(TreeId::Providers, &name)?
                    .ok_or_else(|| Error::not_found("provider", &name))?;
                let proxy_key_counts = proxy_key_counts(store, &provider)?;
                Ok(pb::GetProviderResponse {
                    provider: Some(redact_provider(provider)),
                    key_counts: key_counts(store.key_counts(Some(&name))?),
                    proxy_key_counts,
                })
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn list_providers(
        &self,
        _request: Request<pb::ListProvidersRequest>,
    ) -> Result<Response<pb::ListProvidersResponse>, Status> {
        let providers: Vec<pb::Provider> = self.read(|store| store.list(TreeId::Providers)).await?;
        Ok(Response::new(pb::ListProvidersResponse {
            providers: providers.into_iter().map(redact_provider).collect(),
        }))
    }

    async fn delete_provider(
        &self,
        request: Request<pb::DeleteProviderRequest>,
    ) -> Result<Response<pb::DeleteProviderResponse>, Status> {
        let req = request.into_inner();
        let name = req.name.clone();
        let (keys_deleted, revision) = self
            .store
            .commit_prepared(
                move |store| {
                    let routes: Vec<pb::Route> = store.list(TreeId::Routes)?;
                    let naming: Vec<String> = routes
                        .into_iter()
                        .filter(|r| r.targets.iter().any(|t| t.provider == name))
                        .map(|r| r.model_pattern)
                        .collect();
                    let (keys, _) = store.keys_page(Some(&name), None, None, usize::MAX)?;
                    Ok((naming, keys.into_iter().map(|k| k.id).collect::<Vec<_>>()))
                },
                move |tx, (naming, key_ids)| {
                    if !tx.contains(TreeId::Providers, &req.name)? {
                        return abort(Error::not_found("provider", &req.name));
                    }
                    if !naming.is_empty() {
                        return abort(Error::FailedPrecondition(format!(
                            "provider {:?} is named by routes {}; change or remove them first",
                            req.name,
                            naming.join(", ")
                        )));
                    }
                    if !key_ids.is_empty() && !req.force {
                        let noun = if key_ids.len() == 1 { "key" } else { "keys" };
                        return abort(Error::FailedPrecondition(format!(
                            "provider {:?} still has {} {noun}; remove them first or delete with force",
                            req.name,
                            key_ids.len()
                        )));
                    }
                    for id in key_ids {
                        tx.remove(TreeId::Keys, id)?;
                        transitions::forget(tx, id)?;
                    }
                    tx.remove(TreeId::Providers, &req.name)?;
                    Ok(key_ids.len() as u64)
                },
            )
            .await?;
        tracing::info!(keys_deleted, ?revision, "provider deleted");
        Ok(Response::new(pb::DeleteProviderResponse {
            revision: revision_after(&self.store, revision),
            keys_deleted,
        }))
    }

    async fn add_keys(
        &self,
        request: Request<pb::AddKeysRequest>,
    ) -> Result<Response<pb::AddKeysResponse>, Status> {
        let req = request.into_inner();
        let provider = req.provider.trim().to_string();
        if provider.is_empty() {
            return Err(Error::Invalid("a provider is required".into()).into());
        }
        let lines = classify_lines(&provider, &req.keys);
        let proxy = checked_key_proxy(&req.proxy)?;
        let (results, revision) = self
            .store
            .commit(move |tx| {
                if !tx.contains(TreeId::Providers, &provider)? {
                    return abort(Error::not_found("provider", &provider));
                }
                let mut results = Vec::with_capacity(lines.len());
                for line in &lines {
                    let (line, id, secret) = match line {
                        Line::Done(result) => {
                            results.push(result.clone());
                            continue;
                        }
                        Line::Candidate { line, id, secret } => (*line, id, secret),
                    };
                    let masked = mask_secret(secret);
                    let outcome = if tx.contains(TreeId::Keys, id)? {
                        pb::AddKeyOutcome::Duplicate
                    } else {
                        let key = pb::ProviderKey {
                            id: id.clone(),
                            provider: provider.clone(),
                            secret: secret.clone(),
                            masked: masked.clone(),
                            state: pb::KeyState::Active as i32,
                            state_reason: "added".into(),
                            state_until_unix_ms: 0,
                            added_unix_ms: tx.now_unix_ms(),
                            state_changed_unix_ms: tx.now_unix_ms(),
                            proxy: proxy.clone(),
                            // `Tx::put` seals the secret into these.
                            ..Default::default()
                        };
                        tx.put(TreeId::Keys, id, &key)?;
                        pb::AddKeyOutcome::Added
                    };
                    let message = match outcome {
                        pb::AddKeyOutcome::Duplicate => "already stored".to_string(),
                        _ => String::new(),
                    };
                    results.push(pb::AddKeyResult {
                        line,
                        outcome: outcome as i32,
                        id: id.clone(),
                        masked,
                        message,
                    });
                }
                Ok(results)
            })
            .await?;
        if req.validate {
            let added: Vec<String> = results
                .iter()
                .filter(|r| r.outcome == pb::AddKeyOutcome::Added as i32)
                .map(|r| r.id.clone())
                .collect();
            self.prober()?.schedule_now(added).await?;
        }
        let count =
            |o: pb::AddKeyOutcome| results.iter().filter(|r| r.outcome == o as i32).count() as u64;
        let response = pb::AddKeysResponse {
            added: count(pb::AddKeyOutcome::Added),
            duplicates: count(pb::AddKeyOutcome::Duplicate),
            invalid: count(pb::AddKeyOutcome::Invalid),
            skipped: count(pb::AddKeyOutcome::Skipped),
            revision: revision_after(&self.store, revision),
            results,
        };
        tracing::info!(
            provider = %req.provider,
            added = response.added,
            duplicates = response.duplicates,
            invalid = response.invalid,
            revision = response.revision,
            "keys added"
        );
        Ok(Response::new(response))
    }

    async fn list_keys(
        &self,
        request: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
        let req = request.into_inner();
        let state = state_filter(req.state)?;
        let (limit, after) = page_request(req.page_size, DEFAULT_PAGE_SIZE, &req.page_token)?;
        let provider = (!req.provider.is_empty()).then_some(req.provider);
        let (keys, more) = self
            .read(move |store| {
                if let Some(p) = &provider
                    && !store.tree(TreeId::Providers).contains_key(p.as_bytes())?
                {
                    return Err(Error::not_found("provider", p));
                }
                let (keys, more) =
                    store.keys_page(provider.as_deref(), state, after.as_deref(), limit)?;
                let keys = keys
                    .into_iter()
                    .map(|key| shown_key(store, key))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((keys, more))
            })
            .await?;
        let next_page_token = match (more, keys.last()) {
            (true, Some(last)) => last.id.clone(),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListKeysResponse {
            keys,
            next_page_token,
        }))
    }

    async fn export_keys(
        &self,
        request: Request<pb::ExportKeysRequest>,
    ) -> Result<Response<pb::ExportKeysResponse>, Status> {
        let req = request.into_inner();
        let state = state_filter(req.state)?;
        let (limit, after) =
            page_request(req.page_size, DEFAULT_EXPORT_PAGE_SIZE, &req.page_token)?;
        let provider = (!req.provider.is_empty()).then_some(req.provider);
        let shown_provider = provider.clone();
        let (keys, more) = self
            .read(move |store| {
                if let Some(p) = &provider
                    && !store.tree(TreeId::Providers).contains_key(p.as_bytes())?
                {
                    return Err(Error::not_found("provider", p));
                }
                store.keys_page(provider.as_deref(), state, after.as_deref(), limit)
            })
            .await?;
        let next_page_token = match (more, keys.last()) {
            (true, Some(last)) => last.id.clone(),
            _ => String::new(),
        };
        if req.reveal {
            // Who asked for secrets, and how many, without the secrets themselves.
            tracing::warn!(provider = ?shown_provider, keys = keys.len(), "provider keys exported in full");
        }
        let keys = if req.reveal {
            // Secrets are sealed at rest: opened here, for this answer only.
            keys.into_iter()
                .map(|key| self.store.reveal(key))
                .collect::<Result<Vec<_>, _>>()?
        } else {
            keys.into_iter().map(redact_key).collect()
        };
        Ok(Response::new(pb::ExportKeysResponse {
            keys,
            next_page_token,
        }))
    }

    async fn enable_keys(
        &self,
        request: Request<pb::EnableKeysRequest>,
    ) -> Result<Response<pb::EnableKeysResponse>, Status> {
        let ids = checked_ids(&request.into_inner().ids)?;
        let ((changed, plans), revision) = self
            .store
            .commit_prepared(current_settings, move |tx, settings| {
                set_key_states(tx, &ids, KeyState::Active, "enabled by operator", settings)
            })
            .await?;
        self.plan(plans);
        Ok(Response::new(pb::EnableKeysResponse {
            revision: revision_after(&self.store, revision),
            changed,
        }))
    }

    async fn disable_keys(
        &self,
        request: Request<pb::DisableKeysRequest>,
    ) -> Result<Response<pb::DisableKeysResponse>, Status> {
        let req = request.into_inner();
        let ids = checked_ids(&req.ids)?;
        let reason = match req.reason.trim() {
            "" => "disabled by operator".to_string(),
            r => r.to_string(),
        };
        let ((changed, plans), revision) = self
            .store
            .commit_prepared(current_settings, move |tx, settings| {
                set_key_states(tx, &ids, KeyState::Disabled, &reason, settings)
            })
            .await?;
        self.plan(plans);
        Ok(Response::new(pb::DisableKeysResponse {
            revision: revision_after(&self.store, revision),
            changed,
        }))
    }

    async fn delete_keys(
        &self,
        request: Request<pb::DeleteKeysRequest>,
    ) -> Result<Response<pb::DeleteKeysResponse>, Status> {
        let ids = checked_ids(&request.into_inner().ids)?;
        let (deleted, revision) = self
            .store
            .commit(move |tx| {
                let keys = keys_or_not_found(tx, &ids)?;
                for key in &keys {
                    tx.remove(TreeId::Keys, &key.id)?;
                    transitions::forget(tx, &key.id)?;
                }
                Ok(keys.len() as u64)
            })
            .await?;
        Ok(Response::new(pb::DeleteKeysResponse {
            revision: revision_after(&self.store, revision),
            deleted,
        }))
    }

    async fn set_key_proxy(
        &self,
        request: Request<pb::SetKeyProxyRequest>,
    ) -> Result<Response<pb::SetKeyProxyResponse>, Status> {
        let req = request.into_inner();
        let ids = checked_ids(&req.ids)?;
        let proxy = checked_key_proxy(&req.proxy)?;
        let shown = mask_proxy(&proxy);
        let (updated, revision) = self
            .store
            .commit(move |tx| {
                // Every id is looked up before any write, so an unknown one changes nothing.
                let keys = keys_or_not_found(tx, &ids)?;
                let mut updated = 0;
                for mut key in keys {
                    if key.proxy == proxy {
                        continue;
                    }
                    key.proxy.clone_from(&proxy);
                    tx.put(TreeId::Keys, &key.id, &key)?;
                    updated += 1;
                }
                Ok(updated)
            })
            .await?;
        tracing::info!(updated, proxy = %shown, ?revision, "key proxies set");
        Ok(Response::new(pb::SetKeyProxyResponse {
            revision: revision_after(&self.store, revision),
            updated,
        }))
    }

    async fn put_route(
        &self,
        request: Request<pb::PutRouteRequest>,
    ) -> Result<Response<pb::PutRouteResponse>, Status> {
        let mut route = request
            .into_inner()
            .route
            .ok_or_else(|| Error::Invalid("a route is required".into()))?;
        route.model_pattern = route.model_pattern.trim().to_string();
        // Glob syntax is checked on writes only; stored patterns stay readable as they are.
        validate_route_pattern(&route.model_pattern).map_err(Error::from)?;
        let checked = model::Route::try_from(&route).map_err(Error::from)?;
        // Store the normalised form, so what is listed is what data planes apply: weight 0
        // as 1, an unspecified strategy as priority, -0.0 prices as 0.
        route.strategy = checked.strategy.to_pb() as i32;
        route.sticky_secs = checked
            .sticky
            .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(MAX_STICKY_SECS));
        route.targets = checked
            .targets
            .iter()
            .map(|t| pb::RouteTarget {
                provider: t.provider.clone(),
                model: t.model.clone().unwrap_or_default(),
                priority: t.priority,
                weight: t.weight,
                input_usd_per_million_tokens: t.prices.input,
                output_usd_per_million_tokens: t.prices.output,
            })
            .collect();
        let (route, revision) = self
            .store
            .commit(move |tx| {
                for target in &route.targets {
                    if !tx.contains(TreeId::Providers, &target.provider)? {
                        return abort(Error::FailedPrecondition(format!(
                            "route {:?} names provider {:?}, which does not exist",
                            route.model_pattern, target.provider
                        )));
                    }
                }
                let mut route = route.clone();
                route.updated_unix_ms = tx.now_unix_ms();
                tx.put(TreeId::Routes, &route.model_pattern, &route)?;
                Ok(route)
            })
            .await?;
        Ok(Response::new(pb::PutRouteResponse {
            route: Some(route),
            revision: revision_after(&self.store, revision),
        }))
    }

    async fn list_routes(
        &self,
        _request: Request<pb::ListRoutesRequest>,
    ) -> Result<Response<pb::ListRoutesResponse>, Status> {
        let routes = self.read(|store| store.list(TreeId::Routes)).await?;
        Ok(Response::new(pb::ListRoutesResponse { routes }))
    }

    async fn delete_route(
        &self,
        request: Request<pb::DeleteRouteRequest>,
    ) -> Result<Response<pb::DeleteRouteResponse>, Status> {
        let pattern = request.into_inner().model_pattern;
        let (_, revision) = self
            .store
            .commit(move |tx| {
                if !tx.remove(TreeId::Routes, &pattern)? {
                    return abort(Error::not_found("route", &pattern));
                }
                Ok(())
            })
            .await?;
        Ok(Response::new(pb::DeleteRouteResponse {
            revision: revision_after(&self.store, revision),
        }))
    }

    async fn explain_route(
        &self,
        request: Request<pb::ExplainRouteRequest>,
    ) -> Result<Response<pb::ExplainRouteResponse>, Status> {
        let req = request.into_inner();
        let model = req.model.trim().to_string();
        if model.is_empty() {
            return Err(Error::Invalid("a model is required".into()).into());
        }
        validate_model_pattern(&model).map_err(|_| {
            Error::Invalid(format!(
                "invalid model {model:?}: use 1-256 visible ASCII characters"
            ))
        })?;
        let protocol = ClientProtocol::from_pb(req.protocol).ok_or_else(|| {
            Error::Invalid(format!("unknown client protocol number {}", req.protocol))
        })?;
        let response = self
            .read(move |store| explain(store, &model, protocol, now_unix_ms()))
            .await?;
        Ok(Response::new(response))
    }

    async fn create_client_token(
        &self,
        request: Request<pb::CreateClientTokenRequest>,
    ) -> Result<Response<pb::CreateClientTokenResponse>, Status> {
        let name = request.into_inner().name.trim().to_string();
        validate_token_name(&name).map_err(Error::from)?;
        let token = format!("fk-{}", random_hex(20).map_err(Error::Internal)?);
        let hash = token_hash(&token);
        let prefix = token[..7].to_string();
        let (mut client_token, revision) = self
            .store
            .commit(move |tx| {
                if tx.contains(TreeId::ClientTokens, &name)? {
                    return abort(Error::already_exists("client token", &name));
                }
                let record = pb::ClientToken {
                    name: name.clone(),
                    token_hash: hash.clone(),
                    prefix: prefix.clone(),
                    created_unix_ms: tx.now_unix_ms(),
                };
                tx.put(TreeId::ClientTokens, &name, &record)?;
                Ok(record)
            })
            .await?;
        client_token.token_hash.clear();
        tracing::info!(name = %client_token.name, ?revision, "client token created");
        Ok(Response::new(pb::CreateClientTokenResponse {
            token,
            client_token: Some(client_token),
            revision: revision_after(&self.store, revision),
        }))
    }

    async fn list_client_tokens(
        &self,
        _request: Request<pb::ListClientTokensRequest>,
    ) -> Result<Response<pb::ListClientTokensResponse>, Status> {
        let mut client_tokens: Vec<pb::ClientToken> =
            self.read(|store| store.list(TreeId::ClientTokens)).await?;
        for t in &mut client_tokens {
            t.token_hash.clear();
        }
        Ok(Response::new(pb::ListClientTokensResponse {
            client_tokens,
        }))
    }

    async fn revoke_client_token(
        &self,
        request: Request<pb::RevokeClientTokenRequest>,
    ) -> Result<Response<pb::RevokeClientTokenResponse>, Status> {
        let name = request.into_inner().name;
        let (_, revision) = self
            .store
            .commit(move |tx| {
                if !tx.remove(TreeId::ClientTokens, &name)? {
                    return abort(Error::not_found("client token", &name));
                }
                Ok(())
            })
            .await?;
        Ok(Response::new(pb::RevokeClientTokenResponse {
            revision: revision_after(&self.store, revision),
        }))
    }

    async fn list_settings(
        &self,
        _request: Request<pb::ListSettingsRequest>,
    ) -> Result<Response<pb::ListSettingsResponse>, Status> {
        let settings = self
            .read(|store| {
                effective_settings(store)?
                    .iter()
                    .map(|(name, value)| setting_info(name, value))
                    .collect()
            })
            .await?;
        Ok(Response::new(pb::ListSettingsResponse { settings }))
    }

    async fn get_setting(
        &self,
        request: Request<pb::GetSettingRequest>,
    ) -> Result<Response<pb::GetSettingResponse>, Status> {
        let name = request.into_inner().name;
        let setting = self
            .read(move |store| {
                let spec = settings::spec(&name)?;
                let value = store
                    .settings()?
                    .remove(spec.name)
                    .unwrap_or_else(|| spec.default.to_string());
                setting_info(spec.name, &value)
            })
            .await?;
        Ok(Response::new(pb::GetSettingResponse {
            setting: Some(setting),
        }))
    }

    async fn set_setting(
        &self,
        request: Request<pb::SetSettingRequest>,
    ) -> Result<Response<pb::SetSettingResponse>, Status> {
        let req = request.into_inner();
        let spec = settings::spec(req.name.trim()).map_err(Error::from)?;
        let value = spec.check(&req.value).map_err(Error::from)?;
        let stored = value.clone();
        let (_, revision) = self
            .store
            .commit(move |tx| {
                let current: Option<String> = tx
                    .get_raw(TreeId::Settings, spec.name)?
                    .or_else(|| Some(spec.default.to_string()));
                if current.as_deref() == Some(stored.as_str()) {
                    return Ok(());
                }
                tx.put_raw(TreeId::Settings, spec.name, &stored)
            })
            .await?;
        tracing::info!(name = spec.name, %value, ?revision, "setting changed");
        Ok(Response::new(pb::SetSettingResponse {
            setting: Some(setting_info(spec.name, &value)?),
            revision: revision_after(&self.store, revision),
        }))
    }

    type ValidateKeysStream = ValidateStream;

    async fn validate_keys(
        &self,
        request: Request<pb::ValidateKeysRequest>,
    ) -> Result<Response<Self::ValidateKeysStream>, Status> {
        let req = request.into_inner();
        let prober = self.prober()?.clone();
        let (keys, skipped) = self
            .read(move |store| validation_targets(store, &req))
            .await?;
        let total = keys.len() as u64;
        let (out_tx, out_rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let (probe_tx, mut probe_rx) = tokio::sync::mpsc::channel(64);
            let ids: Vec<String> = keys.into_iter().map(|k| k.id).collect();
            let run = prober.validate(ids, probe_tx);
            let forward = async {
                let mut done = 0u64;
                let mut states: std::collections::BTreeMap<KeyState, u64> =
                    std::collections::BTreeMap::new();
                while let Some((id, result)) = probe_rx.recv().await {
                    done += 1;
                    let message = match result {
                        // One key that cannot be probed (deleted meanwhile, say) does not
                        // end the others' validation: it is reported and counted skipped.
                        Err(e) => Ok(pb::ValidateKeysResponse {
                            event: Some(pb::validate_keys_response::Event::Result(
                                pb::KeyProbeResult {
                                    id,
                                    reason: format!("not probed: {e}"),
                                    done,
                                    total,
                                    ..Default::default()
                                },
                            )),
                        }),
                        Ok(probed) => {
                            if let Some(state) = KeyState::from_pb(probed.key.state) {
                                *states.entry(state).or_default() += 1;
                            }
                            Ok(pb::ValidateKeysResponse {
                                event: Some(pb::validate_keys_response::Event::Result(
                                    pb::KeyProbeResult {
                                        id: probed.key.id.clone(),
                                        provider: probed.key.provider.clone(),
                                        masked: probed.key.masked.clone(),
                                        state: probed.key.state,
                                        reason: probed.key.state_reason.clone(),
                                        latency_ms: u32::try_from(probed.latency.as_millis())
                                            .unwrap_or(u32::MAX),
                                        done,
                                        total,
                                    },
                                )),
                            })
                        }
                    };
                    if out_tx.send(message).await.is_err() {
                        return None;
                    }
                }
                Some(states)
            };
            let ((probed, skipped_now), states) = tokio::join!(run, forward);
            if let Some(states) = states {
                let summary = pb::ValidateKeysSummary {
                    probed,
                    skipped: skipped + skipped_now,
                    states: key_counts(states),
                };
                let _ = out_tx
                    .send(Ok(pb::ValidateKeysResponse {
                        event: Some(pb::validate_keys_response::Event::Summary(summary)),
                    }))
                    .await;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out_rx),
        )))
    }

    async fn get_key_history(
        &self,
        request: Request<pb::GetKeyHistoryRequest>,
    ) -> Result<Response<pb::GetKeyHistoryResponse>, Status> {
        let ids = checked_ids(&[request.into_inner().id])?;
        let id = ids.into_iter().next().unwrap_or_default();
        let response = self
            .read(move |store| {
                let key = store
                    .get::<pb::ProviderKey>(TreeId::Keys, &id)?
                    .ok_or_else(|| Error::not_found("key", &id))?;
                let history: pb::KeyHistory =
                    store.get(TreeId::KeyHistory, &id)?.unwrap_or_default();
                Ok(pb::GetKeyHistoryResponse {
                    key: Some(shown_key(store, key)?),
                    transitions: history.transitions,
                })
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn get_status(
        &self,
        _request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::GetStatusResponse>, Status> {
        let data_planes = self.nodes.list();
        let response = self
            .read(move |store| {
                let counts = store.key_counts(None)?;
                Ok(pb::GetStatusResponse {
                    revision: store.revision(),
                    store_id: store.store_id().to_string(),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    providers: store.count(TreeId::Providers),
                    keys: counts.values().sum(),
                    key_counts: key_counts(counts),
                    routes: store.count(TreeId::Routes),
                    client_tokens: store.count(TreeId::ClientTokens),
                    data_planes,
                })
            })
            .await?;
        Ok(Response::new(response))
    }
}

/// Usable and total keys of one provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct KeyTally {
    usable: u64,
    total: u64,
}

/// Answers `ExplainRoute` from the store as it is now: the same plan a data plane makes
/// ([`routing::plan`]), with key counts from the key inventory. The key states there are
/// the ones key health decided; a cooldown whose end has passed counts as usable, as it
/// does on the data planes, even before the cooldown timer has written `active`.
fn explain(
    store: &Store,
    model: &str,
    protocol: ClientProtocol,
    now_unix_ms: i64,
) -> Result<pb::ExplainRouteResponse, Error> {
    let revision = store.revision();
    let corrupt = |tree: &'static str| {
        move |e: model::InvalidResource| Error::Corrupt {
            tree,
            detail: e.message,
        }
    };
    let providers = store
        .list::<pb::Provider>(TreeId::Providers)?
        .iter()
        .map(|p| model::Provider::try_from(p).map_err(corrupt("providers")))
        .collect::<Result<Vec<_>, _>>()?;
    let routes = store
        .list::<pb::Route>(TreeId::Routes)?
        .iter()
        .map(|r| model::Route::try_from(r).map_err(corrupt("routes")))
        .collect::<Result<Vec<_>, _>>()?;
    let plan = routing::plan(&routes, &providers, model, protocol);

    let mut tallies: HashMap<&str, KeyTally> = plan
        .candidates
        .iter()
        .map(|c| (c.provider.name.as_str(), KeyTally::default()))
        .collect();
    if !tallies.is_empty() {
        store.visit_keys(|key| {
            let Some(tally) = tallies.get_mut(key.provider.as_str()) else {
                return;
            };
            tally.total += 1;
            if KeyState::from_pb(key.state)
                .is_some_and(|s| s.is_usable(key.state_until_unix_ms, now_unix_ms))
            {
                tally.usable += 1;
            }
        })?;
    }

    let candidates = plan
        .candidates
        .iter()
        .map(|c| {
            let tally = tallies
                .get(c.provider.name.as_str())
                .copied()
                .unwrap_or_default();
            pb::ExplainedCandidate {
                provider: c.provider.name.clone(),
                provider_type: c.provider.provider_type.to_pb() as i32,
                model: c.model_to_send.to_string(),
                model_rewritten: c.rewritten,
                priority: c.priority,
                weight: c.weight,
                input_usd_per_million_tokens: c.prices.input,
                output_usd_per_million_tokens: c.prices.output,
                usable_keys: tally.usable,
                total_keys: tally.total,
                native: c.native,
                note: candidate_note(c, tally, protocol, plan.strategy),
            }
        })
        .collect();
    let mut reason = plan.reason.to_string();
    if !plan.unknown_providers.is_empty() {
        reason.push_str(&format!(
            "; providers not found, left out: {}",
            plan.unknown_providers.join(", ")
        ));
    }
    Ok(pb::ExplainRouteResponse {
        matched_pattern: plan.matched.unwrap_or_default().to_string(),
        strategy: plan.strategy.to_pb() as i32,
        sticky_secs: plan
            .sticky
            .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(MAX_STICKY_SECS)),
        reason,
        candidates,
        revision,
    })
}

/// What an operator should know about one candidate, or "" when nothing stands out.
fn candidate_note(
    candidate: &routing::PlannedCandidate<'_>,
    keys: KeyTally,
    protocol: ClientProtocol,
    strategy: RouteStrategy,
) -> String {
    let provider_type = candidate.provider.provider_type;
    let mut notes: Vec<String> = Vec::new();
    if provider_type == ProviderType::Mock {
        notes.push("answers locally, needs no key".into());
    } else if keys.total == 0 {
        notes.push("no keys: it will be skipped".into());
    } else if keys.usable == 0 {
        notes.push("no usable key: it will be skipped".into());
    }
    if !candidate.native {
        notes.push(format!(
            "speaks {provider_type}: the {protocol} request is translated"
        ));
    }
    if strategy == RouteStrategy::LowestCost && !candidate.prices.is_known() {
        notes.push("no price: ranked after priced candidates".into());
    }
    notes.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_classified_without_the_store() {
        let lines: Vec<String> = [
            "  sk-aaaaaaaaaaaa  ",
            "",
            "# comment",
            "short",
            "sk-aaaaaaaaaaaa",
            "sk-bbbbbbbbbbbb",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let classified = classify_lines("p", &lines);
        let outcomes: Vec<String> = classified
            .iter()
            .map(|l| match l {
                Line::Done(r) => format!("{}:{}", r.line, r.outcome),
                Line::Candidate { line, .. } => format!("{line}:candidate"),
            })
            .collect();
        assert_eq!(
            outcomes,
            vec!["1:candidate", "2:4", "3:4", "4:3", "5:2", "6:candidate"],
            "skipped=4 invalid=3 duplicate=2"
        );
        let Line::Done(dup) = &classified[4] else {
            panic!("line 5 is a duplicate")
        };
        assert_eq!(dup.message, "same key as line 1");
        let Line::Candidate { secret, .. } = &classified[0] else {
            panic!("line 1 is a candidate")
        };
        assert_eq!(secret, "sk-aaaaaaaaaaaa", "whitespace trimmed");
    }

    fn planned(provider: &model::Provider) -> routing::PlannedCandidate<'_> {
        routing::PlannedCandidate {
            provider,
            model_to_send: "m",
            rewritten: false,
            native: ClientProtocol::OpenAi.is_native(provider.provider_type),
            priority: 0,
            weight: 1,
            prices: model::Prices::default(),
        }
    }

    #[test]
    fn notes_say_why_a_candidate_may_be_passed_over() {
        let provider = |provider_type| model::Provider {
            name: "p".into(),
            provider_type,
            base_url: String::new(),
            priority: 0,
            weight: 1,
            proxies: Vec::new(),
            headers: Vec::new(),
        };
        let openai = provider(ProviderType::OpenAi);
        let mock = provider(ProviderType::Mock);
        let gemini = provider(ProviderType::Gemini);
        let keys = |usable, total| KeyTally { usable, total };
        let note =
            |p: &model::Provider, k, s| candidate_note(&planned(p), k, ClientProtocol::OpenAi, s);
        assert_eq!(note(&openai, keys(1, 2), RouteStrategy::Priority), "");
        assert_eq!(
            note(&openai, keys(0, 2), RouteStrategy::Priority),
            "no usable key: it will be skipped"
        );
        assert_eq!(
            note(&openai, keys(0, 0), RouteStrategy::Priority),
            "no keys: it will be skipped"
        );
        assert_eq!(
            note(&mock, keys(0, 0), RouteStrategy::Priority),
            "answers locally, needs no key"
        );
        assert_eq!(
            note(&gemini, keys(1, 1), RouteStrategy::LowestCost),
            "speaks gemini: the openai request is translated; no price: ranked after priced candidates"
        );
    }

    #[test]
    fn key_proxies_are_normalised_and_refused_without_their_password() {
        assert_eq!(checked_key_proxy("  ").unwrap(), "");
        assert_eq!(
            checked_key_proxy(" SOCKS5h://u:p@Proxy.Example ").unwrap(),
            "socks5://u:p@proxy.example:1080"
        );
        let err = checked_key_proxy("ftp://u:hunter2@h:1").unwrap_err();
        let status = Status::from(err);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("u:***@h:1"), "{status:?}");
        assert!(!status.message().contains("hunter2"), "{status:?}");
    }

    #[test]
    fn ids_are_checked_and_deduplicated() {
        assert!(checked_ids(&[]).is_err());
        assert!(checked_ids(&["nothex".into()]).is_err());
        let ids = checked_ids(&["ABCDEF0123456789".into(), "abcdef0123456789".into()]).unwrap();
        assert_eq!(ids, vec!["abcdef0123456789"]);
    }
}
