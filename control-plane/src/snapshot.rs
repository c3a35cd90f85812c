//! Turns the store at a revision into what a data plane needs: a full snapshot, or a
//! delta from the revision it holds.
//!
//! The revision is read before the resources, so what is sent is at least as new as the
//! revision it claims; anything newer is sent again with the next revision, and applying
//! a resource twice is harmless.

use std::collections::BTreeMap;

use fulcrum_proto::model::settings::SETTINGS;
use fulcrum_proto::pb;
use fulcrum_proto::pb::stream_config_response::Body;

use crate::error::Error;
use crate::store::{Store, TreeId};

/// What a data plane is sent next.
#[derive(Debug, Clone)]
pub struct ConfigUpdate {
    pub revision: u64,
    pub body: Body,
}

impl ConfigUpdate {
    /// Number of resources carried, for logs.
    pub fn size(&self) -> usize {
        let count = |r: &pb::Resources| {
            r.providers.len()
                + r.keys.len()
                + r.routes.len()
                + r.client_tokens.len()
                + r.settings.len()
        };
        match &self.body {
            Body::Snapshot(s) => s.resources.as_ref().map_or(0, count),
            Body::Delta(d) => d.upserted.as_ref().map_or(0, count) + d.removed.len(),
        }
    }

    pub fn is_snapshot(&self) -> bool {
        matches!(self.body, Body::Snapshot(_))
    }
}

/// Builds the update that takes a node from `applied` (a revision of store `store_id`) to
/// the store's latest revision. `None` for `applied` asks for a snapshot.
pub fn update_since(store: &Store, applied: Option<(u64, &str)>) -> Result<ConfigUpdate, Error> {
    let revision = store.revision();
    let base = applied.filter(|(rev, id)| *rev > 0 && *rev <= revision && *id == store.store_id());
    let Some((base, _)) = base else {
        return snapshot(store, revision);
    };
    let Some(entries) = store.changes_since(base, revision)? else {
        return snapshot(store, revision);
    };
    let mut upserted = pb::Resources::default();
    let mut removed = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let settings = effective_settings(store)?;
    for reference in entries.into_iter().flat_map(|e| e.changed) {
        if !seen.insert((reference.kind, reference.name.clone())) {
            continue;
        }
        let name = reference.name.as_str();
        let found = match pb::ResourceKind::try_from(reference.kind) {
            Ok(pb::ResourceKind::Provider) => {
                push(&mut upserted.providers, store.get(TreeId::Providers, name)?)
            }
            // Data planes need the secret in full; the store holds it sealed.
            Ok(pb::ResourceKind::Key) => push(
                &mut upserted.keys,
                store
                    .get(TreeId::Keys, name)?
                    .map(|k| store.reveal(k))
                    .transpose()?,
            ),
            Ok(pb::ResourceKind::Route) => {
                push(&mut upserted.routes, store.get(TreeId::Routes, name)?)
            }
            Ok(pb::ResourceKind::ClientToken) => push(
                &mut upserted.client_tokens,
                store.get(TreeId::ClientTokens, name)?,
            ),
            // Settings are never removed: resetting one sends its default.
            Ok(pb::ResourceKind::Setting) => push(
                &mut upserted.settings,
                settings.get(name).map(|value| pb::Setting {
                    name: name.to_string(),
                    value: value.clone(),
                }),
            ),
            Ok(pb::ResourceKind::Unspecified) | Err(_) => {
                return Err(Error::Corrupt {
                    tree: "changelog",
                    detail: format!("unknown resource kind {}", reference.kind),
                });
            }
        };
        if !found {
            removed.push(reference);
        }
    }
    Ok(ConfigUpdate {
        revision,
        body: Body::Delta(pb::Delta {
            base_revision: base,
            upserted: Some(upserted),
            removed,
        }),
    })
}

fn push<T>(into: &mut Vec<T>, item: Option<T>) -> bool {
    let found = item.is_some();
    into.extend(item);
    found
}

fn snapshot(store: &Store, revision: u64) -> Result<ConfigUpdate, Error> {
    let settings = effective_settings(store)?
        .into_iter()
        .map(|(name, value)| pb::Setting { name, value })
        .collect();
    let resources = pb::Resources {
        providers: store.list(TreeId::Providers)?,
        keys: store
            .list(TreeId::Keys)?
            .into_iter()
            .map(|k| store.reveal(k))
            .collect::<Result<_, _>>()?,
        routes: store.list(TreeId::Routes)?,
        client_tokens: store.list(TreeId::ClientTokens)?,
        settings,
    };
    Ok(ConfigUpdate {
        revision,
        body: Body::Snapshot(pb::Snapshot {
            resources: Some(resources),
        }),
    })
}

/// Every known setting with its stored value or its default.
pub fn effective_settings(store: &Store) -> Result<BTreeMap<String, String>, Error> {
    let stored = store.settings()?;
    Ok(SETTINGS
        .iter()
        .map(|spec| {
            let value = stored
                .get(spec.name)
                .cloned()
                .unwrap_or_else(|| spec.default.to_string());
            (spec.name.to_string(), value)
        })
        .collect())
}
