//! Model listings: what every provider with a usable key lists, plus the exact model
//! names of routes that have a usable candidate now, less the models an operator hides,
//! in the shape of the client's protocol.

use std::collections::BTreeMap;

use axum::response::{IntoResponse, Response};
use fulcrum_proto::model::{ProviderType, routing};
use http::header;
use serde_json::{Value, json};

use crate::failover::{Attempts, ClientRequest, now_ms};
use crate::protocol::{Operation, Protocol};
use crate::proxy::{collect, error_response};

/// `GET /v1/models`, `GET /v1beta/models` (and Anthropic's listing) without a pinned
/// provider.
pub async fn list(attempts: &Attempts<'_>, request: &ClientRequest) -> Response {
    let config = attempts.config;
    let now = now_ms();
    let usable = |provider: &str, provider_type: ProviderType| {
        provider_type == ProviderType::Mock
            || config
                .pools
                .get(provider)
                .is_some_and(|pool| pool.has_usable(now))
    };
    // Model id -> the provider that lists it (the first, by name).
    let mut found: BTreeMap<String, String> = BTreeMap::new();
    let mut last_error = None;
    let mut providers: Vec<_> = config
        .providers
        .values()
        .filter(|p| usable(&p.name, p.provider_type))
        .collect();
    providers.sort_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)));
    for provider in providers {
        // Vertex Express lists no publisher models for API keys.
        if provider.provider_type == ProviderType::VertexExpress {
            continue;
        }
        let native = Protocol::of(provider.provider_type);
        let pinned = ClientRequest {
            protocol: native,
            operation: Operation::ListModels,
            pinned: Some(provider.name.clone()),
            ..request.clone()
        };
        let body = match attempts.run(&pinned).await {
            Ok(committed) => collect(committed).await,
            Err(e) => {
                tracing::debug!(provider = %provider.name, error = %e, "cannot list models");
                last_error = Some(e);
                continue;
            }
        };
        let Ok(listed) = serde_json::from_slice::<Value>(&body) else {
            continue;
        };
        for id in listed_ids(native, &listed) {
            found.entry(id).or_insert_with(|| provider.name.clone());
        }
    }
    // Exact route names are models too, when one of their candidates can serve now.
    for route in config.routes.values() {
        if route.model_pattern.contains('*') {
            continue;
        }
        let plan = routing::plan(
            config.routes.values(),
            &config.providers,
            &route.model_pattern,
            request.protocol.to_routing(),
        );
        if let Some(candidate) = plan
            .candidates
            .iter()
            .find(|c| usable(&c.provider.name, c.provider.provider_type))
        {
            found
                .entry(route.model_pattern.clone())
                .or_insert_with(|| candidate.provider.name.clone());
        }
    }
    found.retain(|id, _| !config.settings.is_model_hidden(id));
    if found.is_empty()
        && let Some(e) = last_error
    {
        return error_response(e, request.protocol);
    }
    let body = render(request.protocol, &found);
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// `GET /v1/models/{model}` and `GET /v1beta/models/{model}` for a model a route names:
/// the model as the client's protocol describes one, when a candidate can serve it now.
/// Answered here rather than by an upstream, which may speak another protocol or know the
/// model by the name the route rewrites it to. `None` for a model without a route: the
/// providers of the client's protocol are asked, as for any request.
pub async fn get(attempts: &Attempts<'_>, request: &ClientRequest) -> Option<Response> {
    let config = attempts.config;
    let now = now_ms();
    let plan = routing::plan(
        config.routes.values(),
        &config.providers,
        &request.model,
        request.protocol.to_routing(),
    );
    plan.matched?;
    let owner = plan.candidates.iter().find(|c| {
        c.provider.provider_type == ProviderType::Mock
            || config
                .pools
                .get(&c.provider.name)
                .is_some_and(|pool| pool.has_usable(now))
    });
    let Some(owner) = owner.filter(|_| !config.settings.is_model_hidden(&request.model)) else {
        return Some(error_response(
            crate::failover::ProxyError::NoCandidate(format!(
                "model {:?} is not served here",
                request.model
            )),
            request.protocol,
        ));
    };
    let one: BTreeMap<String, String> =
        [(request.model.clone(), owner.provider.name.clone())].into();
    let listing = render(request.protocol, &one);
    let model = match request.protocol {
        Protocol::Gemini => listing["models"][0].clone(),
        Protocol::OpenAi | Protocol::Anthropic => listing["data"][0].clone(),
    };
    Some(
        (
            [(header::CONTENT_TYPE, "application/json")],
            model.to_string(),
        )
            .into_response(),
    )
}

/// The model ids in a provider's own listing.
fn listed_ids(protocol: Protocol, listed: &Value) -> Vec<String> {
    match protocol {
        Protocol::OpenAi | Protocol::Anthropic => listed["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["id"].as_str().map(str::to_string))
            .collect(),
        Protocol::Gemini => listed["models"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["name"].as_str())
            .map(|name| name.strip_prefix("models/").unwrap_or(name).to_string())
            .collect(),
    }
}

/// A listing in the client protocol's shape.
fn render(protocol: Protocol, models: &BTreeMap<String, String>) -> Value {
    match protocol {
        Protocol::OpenAi => {
            let data: Vec<Value> = models
                .iter()
                .map(|(id, owner)| json!({"id": id, "object": "model", "created": 0, "owned_by": owner}))
                .collect();
            json!({"object": "list", "data": data})
        }
        Protocol::Gemini => {
            let data: Vec<Value> = models
                .keys()
                .map(|id| {
                    json!({
                        "name": format!("models/{id}"),
                        "displayName": id,
                        "supportedGenerationMethods": ["generateContent", "countTokens"],
                    })
                })
                .collect();
            json!({"models": data})
        }
        Protocol::Anthropic => {
            let data: Vec<Value> = models
                .keys()
                .map(|id| {
                    json!({
                        "type": "model",
                        "id": id,
                        "display_name": id,
                        "created_at": "1970-01-01T00:00:00Z",
                    })
                })
                .collect();
            json!({
                "data": data,
                "has_more": false,
                "first_id": models.keys().next(),
                "last_id": models.keys().next_back(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_are_read_and_written_in_each_shape() {
        let gemini = json!({"models": [{"name": "models/gemini-2.5-pro"}, {"name": "models/gemini-2.5-flash"}]});
        assert_eq!(
            listed_ids(Protocol::Gemini, &gemini),
            ["gemini-2.5-pro", "gemini-2.5-flash"]
        );
        let openai = json!({"object": "list", "data": [{"id": "gpt-4o"}]});
        assert_eq!(listed_ids(Protocol::OpenAi, &openai), ["gpt-4o"]);
        let models: BTreeMap<String, String> = [("a".to_string(), "p".to_string())].into();
        assert_eq!(
            render(Protocol::Gemini, &models)["models"][0]["name"],
            "models/a"
        );
        assert_eq!(render(Protocol::Anthropic, &models)["data"][0]["id"], "a");
        assert_eq!(
            render(Protocol::OpenAi, &models)["data"][0]["owned_by"],
            "p"
        );
    }
}
