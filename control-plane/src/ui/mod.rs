//! The admin web UI on the control plane's HTTP listener: pages under `/ui/...` and the
//! JSON calls they make under `/ui/api/...`.
//!
//! One source of truth: every JSON handler calls the same `AdminService` and `LogService`
//! implementations the gRPC server runs (in-process, with a `tonic::Request`), and maps
//! their `tonic::Status` to an HTTP status with the message, so the page shows the API's
//! own validation messages.
//!
//! Access: signing in with the admin token gives a random session id in a cookie
//! (`HttpOnly; SameSite=Strict; Path=/ui`, expiring), never the token. Every route in
//! [`ENDPOINTS`] but the sign-in page and the static assets needs that session: pages
//! redirect to `/ui/login` without it, JSON calls answer 401. Writes (every non-GET call)
//! also need the session's CSRF token in `x-csrf-token`, and are refused when `Origin` or
//! `Sec-Fetch-Site` say they come from another site.
//!
//! Everything the browser loads (HTML, one JS file, one CSS file) is compiled into the
//! binary: the UI works without any asset from the internet.

mod api;
mod session;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{MethodRouter, get, post};
use std::sync::Arc;

use subtle::ConstantTimeEq;

use crate::tokens::TokenSet;

use crate::admin::Admin;
use crate::logs::service::Logs;

use session::SessionTable;
pub use session::{SESSION_COOKIE, SESSION_TTL};

const INDEX_HTML: &str = include_str!("assets/index.html");
const LOGIN_HTML: &str = include_str!("assets/login.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// Who may call an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: the sign-in page and the static assets it needs. No admin data.
    Public,
    /// A page: without a session, a redirect to `/ui/login`.
    Page,
    /// A JSON call: without a session, 401.
    Api,
}

/// One route of the UI. The router is built from [`ENDPOINTS`] and nothing else, so a
/// test that walks this list cannot miss a route.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    pub method: &'static str,
    /// An axum path; `{id}` stands for a path parameter.
    pub path: &'static str,
    pub access: Access,
    handler: Handler,
}

#[derive(Debug, Clone, Copy)]
enum Handler {
    LoginPage,
    Login,
    Logout,
    Script,
    Style,
    Root,
    Page(&'static str),
    Overview,
    Keys,
    KeyDetail,
    AddKeys,
    KeyAction,
    Logs,
    Config,
    CreateProvider,
    UpdateProvider,
    DeleteProvider,
    PutRoute,
    DeleteRoute,
    ExplainRoute,
    CreateToken,
    RevokeToken,
    SetSetting,
    Planes,
}

const fn endpoint(
    method: &'static str,
    path: &'static str,
    access: Access,
    handler: Handler,
) -> Endpoint {
    Endpoint {
        method,
        path,
        access,
        handler,
    }
}

/// Every route the UI serves.
pub const ENDPOINTS: &[Endpoint] = &[
    endpoint("GET", "/ui/login", Access::Public, Handler::LoginPage),
    endpoint("POST", "/ui/login", Access::Public, Handler::Login),
    endpoint("GET", "/ui/assets/app.js", Access::Public, Handler::Script),
    endpoint("GET", "/ui/assets/app.css", Access::Public, Handler::Style),
    endpoint("POST", "/ui/logout", Access::Api, Handler::Logout),
    endpoint("GET", "/ui", Access::Page, Handler::Root),
    endpoint("GET", "/ui/", Access::Page, Handler::Page("dashboard")),
    endpoint("GET", "/ui/keys", Access::Page, Handler::Page("keys")),
    endpoint("GET", "/ui/logs", Access::Page, Handler::Page("logs")),
    endpoint("GET", "/ui/config", Access::Page, Handler::Page("config")),
    endpoint("GET", "/ui/planes", Access::Page, Handler::Page("planes")),
    endpoint("GET", "/ui/api/overview", Access::Api, Handler::Overview),
    endpoint("GET", "/ui/api/keys", Access::Api, Handler::Keys),
    endpoint("GET", "/ui/api/keys/{id}", Access::Api, Handler::KeyDetail),
    endpoint("POST", "/ui/api/keys/add", Access::Api, Handler::AddKeys),
    endpoint(
        "POST",
        "/ui/api/keys/action",
        Access::Api,
        Handler::KeyAction,
    ),
    endpoint("GET", "/ui/api/logs", Access::Api, Handler::Logs),
    endpoint("GET", "/ui/api/config", Access::Api, Handler::Config),
    endpoint(
        "POST",
        "/ui/api/providers",
        Access::Api,
        Handler::CreateProvider,
    ),
    endpoint(
        "POST",
        "/ui/api/providers/update",
        Access::Api,
        Handler::UpdateProvider,
    ),
    endpoint(
        "POST",
        "/ui/api/providers/delete",
        Access::Api,
        Handler::DeleteProvider,
    ),
    endpoint("POST", "/ui/api/routes", Access::Api, Handler::PutRoute),
    endpoint(
        "POST",
        "/ui/api/routes/delete",
        Access::Api,
        Handler::DeleteRoute,
    ),
    endpoint(
        "GET",
        "/ui/api/routes/explain",
        Access::Api,
        Handler::ExplainRoute,
    ),
    endpoint("POST", "/ui/api/tokens", Access::Api, Handler::CreateToken),
    endpoint(
        "POST",
        "/ui/api/tokens/revoke",
        Access::Api,
        Handler::RevokeToken,
    ),
    endpoint("POST", "/ui/api/settings", Access::Api, Handler::SetSetting),
    endpoint("GET", "/ui/api/planes", Access::Api, Handler::Planes),
];

/// The UI's handles: the services the gRPC server runs, the session table, and the
/// digest of the admin token to check sign-ins against.
#[derive(Clone)]
pub struct Ui {
    admin: Admin,
    logs: Logs,
    sessions: SessionTable,
    /// The admin tokens valid now (two during a rotation), the same set the gRPC
    /// interceptor checks; it compares SHA-256 digests, which leak neither the token nor
    /// its length.
    admin_tokens: Arc<TokenSet>,
    /// Adds `Secure` to the session cookie (set when the HTTP listener speaks TLS).
    secure_cookie: bool,
}

impl Ui {
    pub fn new(admin: Admin, logs: Logs, admin_tokens: Arc<TokenSet>) -> Self {
        Self {
            admin,
            logs,
            sessions: SessionTable::default(),
            admin_tokens,
            secure_cookie: false,
        }
    }

    /// Marks the session cookie `Secure`: for an HTTP listener behind TLS.
    pub fn with_secure_cookie(mut self, secure: bool) -> Self {
        self.secure_cookie = secure;
        self
    }

    fn token_matches(&self, token: &str) -> bool {
        let token = token.trim();
        !token.is_empty() && self.admin_tokens.accepts(token)
    }
}

/// The UI's routes, with the session check in front of every non-public one.
pub fn router(ui: Ui) -> Router {
    let mut public = Router::new();
    let mut private = Router::new();
    for endpoint in ENDPOINTS {
        let route = method_router(endpoint);
        match endpoint.access {
            Access::Public => public = public.route(endpoint.path, route),
            Access::Page | Access::Api => private = private.route(endpoint.path, route),
        }
    }
    // `route_layer`: the checks wrap the UI's routes only, not the fallback, so that an
    // unknown path stays a 404 on the whole listener.
    private = private.route_layer(middleware::from_fn_with_state(ui.clone(), require_session));
    public
        .merge(private)
        .route_layer(middleware::from_fn(security_headers))
        .with_state(ui)
}

fn method_router(endpoint: &Endpoint) -> MethodRouter<Ui> {
    let route = match endpoint.handler {
        Handler::LoginPage => get(login_page),
        Handler::Login => post(login),
        Handler::Logout => post(logout),
        Handler::Script => get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        Handler::Style => get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        Handler::Root => get(|| async { Redirect::to("/ui/") }),
        Handler::Page(name) => get(move |request: Request| async move { page(name, request) }),
        Handler::Overview => get(api::overview),
        Handler::Keys => get(api::keys),
        Handler::KeyDetail => get(api::key_detail),
        Handler::AddKeys => post(api::add_keys),
        Handler::KeyAction => post(api::key_action),
        Handler::Logs => get(api::logs),
        Handler::Config => get(api::config),
        Handler::CreateProvider => post(api::create_provider),
        Handler::UpdateProvider => post(api::update_provider),
        Handler::DeleteProvider => post(api::delete_provider),
        Handler::PutRoute => post(api::put_route),
        Handler::DeleteRoute => post(api::delete_route),
        Handler::ExplainRoute => get(api::explain_route),
        Handler::CreateToken => post(api::create_token),
        Handler::RevokeToken => post(api::revoke_token),
        Handler::SetSetting => post(api::set_setting),
        Handler::Planes => get(api::planes),
    };
    debug_assert!(matches!(endpoint.method, "GET" | "POST"));
    route
}

// === pages ===

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The one HTML shell every page uses; the script draws the page named in `data-page`.
fn page(name: &'static str, request: Request) -> Response {
    let csrf = request
        .extensions()
        .get::<session::Session>()
        .map(|s| s.csrf.clone())
        .unwrap_or_default();
    // Both values are ours (a page name from `ENDPOINTS`, a hex token): nothing to escape.
    let html = INDEX_HTML
        .replace("{{page}}", name)
        .replace("{{csrf}}", &csrf);
    html_response(StatusCode::OK, html)
}

fn html_response(status: StatusCode, html: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}

fn login_html(error: &str) -> String {
    // Only fixed messages reach here; the escape is a guard against a future change.
    LOGIN_HTML.replace("{{error}}", &escape_html(error))
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

async fn login_page(State(ui): State<Ui>, headers: HeaderMap) -> Response {
    if session_of(&ui, &headers).is_some() {
        return Redirect::to("/ui/").into_response();
    }
    html_response(StatusCode::OK, login_html(""))
}

#[derive(serde::Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
}

async fn login(
    State(ui): State<Ui>,
    headers: HeaderMap,
    form: Result<axum::Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    // A sign-in from another site would sign the browser in to the attacker's session
    // (login CSRF); same-site checks apply here as they do to every write.
    if let Err(reason) = same_origin(&headers) {
        return html_response(StatusCode::FORBIDDEN, login_html(reason));
    }
    let Ok(axum::Form(form)) = form else {
        return html_response(
            StatusCode::BAD_REQUEST,
            login_html("send the admin token as a form field named token"),
        );
    };
    if !ui.token_matches(&form.token) {
        tracing::warn!("web UI sign-in with a wrong admin token");
        return html_response(StatusCode::UNAUTHORIZED, login_html("invalid admin token"));
    }
    let created = match ui.sessions.create() {
        Ok(created) => created,
        Err(e) => {
            tracing::error!(error = %e, "cannot create a web UI session");
            return html_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                login_html("cannot create a session"),
            );
        }
    };
    let mut response = Redirect::to("/ui/").into_response();
    let cookie = format!(
        "{SESSION_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/ui; Max-Age={}{}",
        created.id,
        SESSION_TTL.as_secs(),
        if ui.secure_cookie { "; Secure" } else { "" }
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    tracing::info!("web UI session started");
    response
}

async fn logout(State(ui): State<Ui>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie_value(&headers, SESSION_COOKIE) {
        ui.sessions.remove(id);
    }
    let mut response = axum::Json(serde_json::json!({ "signed_out": true })).into_response();
    let cookie = format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/ui; Max-Age=0");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

// === access checks ===

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn session_of(ui: &Ui, headers: &HeaderMap) -> Option<session::Session> {
    ui.sessions.get(cookie_value(headers, SESSION_COOKIE)?)
}

/// Refuses requests a browser marks as coming from another site.
fn same_origin(headers: &HeaderMap) -> Result<(), &'static str> {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return Err("cross-site request refused");
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let bare = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        if host.is_empty() || bare != Some(host) {
            return Err("cross-origin request refused");
        }
    }
    Ok(())
}

fn unauthorized(api: bool) -> Response {
    if api {
        return api::error_response(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "sign in first: no valid session",
        );
    }
    Redirect::to("/ui/login").into_response()
}

async fn require_session(State(ui): State<Ui>, mut request: Request, next: Next) -> Response {
    let api = request.uri().path().starts_with("/ui/api/") || request.method() != Method::GET;
    let Some(session) = session_of(&ui, request.headers()) else {
        return unauthorized(api);
    };
    if request.method() != Method::GET && request.method() != Method::HEAD {
        if let Err(reason) = same_origin(request.headers()) {
            return api::error_response(StatusCode::FORBIDDEN, "permission_denied", reason);
        }
        let given = request
            .headers()
            .get("x-csrf-token")
            .map(HeaderValue::as_bytes)
            .unwrap_or_default();
        if given.is_empty() || !bool::from(given.ct_eq(session.csrf.as_bytes())) {
            return api::error_response(
                StatusCode::FORBIDDEN,
                "permission_denied",
                "missing or wrong x-csrf-token header",
            );
        }
    }
    request.extensions_mut().insert(session);
    next.run(request).await
}

/// Headers on every UI answer: nothing loads from elsewhere, nothing frames the UI, no
/// MIME sniffing, no referrer leaves for another site. (`no-referrer` would make browsers
/// send `Origin: null` on the sign-in form, which the same-origin check refuses.)
async fn security_headers(request: Request<Body>, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_unique_and_only_the_sign_in_is_public() {
        let mut seen = std::collections::HashSet::new();
        for e in ENDPOINTS {
            assert!(
                seen.insert((e.method, e.path)),
                "{} {} twice",
                e.method,
                e.path
            );
            assert!(e.path == "/ui" || e.path.starts_with("/ui/"));
            if e.access == Access::Public {
                assert!(e.path == "/ui/login" || e.path.starts_with("/ui/assets/"));
            }
            if e.path.starts_with("/ui/api/") {
                assert_eq!(e.access, Access::Api);
            }
        }
    }

    #[test]
    fn same_origin_checks() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(same_origin(&headers).is_ok());
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(same_origin(&headers).is_ok());
        headers.insert(header::ORIGIN, HeaderValue::from_static("http://evil.test"));
        assert!(same_origin(&headers).is_err());
        headers.remove(header::ORIGIN);
        headers.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(same_origin(&headers).is_err());
    }

    #[test]
    fn cookies_are_parsed_by_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; fulcrum_session=abc; b=2"),
        );
        assert_eq!(cookie_value(&headers, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie_value(&headers, "c"), None);
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape_html("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
