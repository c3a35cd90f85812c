//! How a provider's upstream calls leave: through which proxy, with which extra headers.
//!
//! The key-to-proxy assignment lives here so that both planes compute it the same way:
//! the data plane for client traffic, the control plane for its probes.
//!
//! **Assignment.** A key with a pinned proxy uses it. Otherwise it uses the provider
//! proxy with the highest rendezvous score `score(key id, proxy URL)` (highest random
//! weight hashing, Thaler and Ravishankar 1998). The score is a fixed 64-bit hash of the
//! two strings, the same in every process and every release, so the assignment survives
//! restarts and is the same on every data plane. Adding a proxy moves only the keys it now
//! wins (about 1/n of them); removing one moves only its own keys.

use std::fmt;

use http::{HeaderName, HeaderValue};

use super::InvalidResource;

/// The two ways out: an HTTP CONNECT tunnel or SOCKS5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyScheme {
    /// `http://`: an HTTP CONNECT tunnel (TLS to the upstream runs inside it).
    Http,
    /// `socks5://`: the proxy resolves the upstream's host name.
    Socks5,
}

/// A checked proxy URL: `http://` or `socks5://`, an optional `user:password@`, a host
/// and a port (80 and 1080 when left out), nothing else. Kept as one boxed string (16
/// bytes, pointer-sized when absent) because every key may carry one.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ProxyUrl(Box<str>);

/// The parts of a [`ProxyUrl`], borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyParts<'a> {
    pub scheme: ProxyScheme,
    /// User and password, as written.
    pub credentials: Option<(&'a str, &'a str)>,
    /// `host:port`, with the port always present.
    pub authority: &'a str,
}

// === impl ProxyUrl ===

impl ProxyUrl {
    /// Checks and normalises a proxy URL (lowercase scheme, explicit port, no trailing
    /// slash). The error message never repeats the password.
    pub fn parse(raw: &str) -> Result<Self, InvalidResource> {
        let raw = raw.trim();
        let shown = mask_proxy(raw);
        let bad = |why: &str| {
            InvalidResource::new(
                "proxy",
                shown.clone(),
                format!("invalid proxy {shown:?}: {why}"),
            )
        };
        let (scheme, rest) = raw
            .split_once("://")
            .ok_or_else(|| bad("it must start with http:// or socks5://"))?;
        let (scheme, default_port) = match scheme.to_ascii_lowercase().as_str() {
            "http" => ("http", 80),
            "socks5" | "socks5h" => ("socks5", 1080),
            _ => return Err(bad("the scheme must be http or socks5")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) || rest.chars().any(|c| c.is_whitespace()) {
            return Err(bad(
                "it must be scheme://[user:password@]host[:port] and nothing more",
            ));
        }
        let (credentials, host_port) = match rest.rsplit_once('@') {
            Some((userinfo, host_port)) => {
                let (user, password) = userinfo
                    .split_once(':')
                    .ok_or_else(|| bad("credentials must be user:password"))?;
                if user.is_empty() || user.len() > 255 || password.len() > 255 {
                    return Err(bad("user must be 1 to 255 and password at most 255 bytes"));
                }
                if !userinfo.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(bad("credentials must be visible ASCII"));
                }
                (Some(userinfo), host_port)
            }
            None => (None, rest),
        };
        let authority: http::uri::Authority = host_port
            .parse()
            .map_err(|_| bad("the host is not valid"))?;
        if authority.host().is_empty() {
            return Err(bad("it has no host"));
        }
        // After a bracketed IPv6 address, or anywhere in a name or IPv4 address, a ':'
        // starts the port.
        let after_host = host_port
            .rsplit_once(']')
            .map_or(host_port, |(_, tail)| tail);
        let port = match after_host.rsplit_once(':') {
            Some((_, digits)) => match digits.parse::<u16>() {
                Ok(0) => return Err(bad("port 0 is not usable")),
                Ok(port) => port,
                Err(_) => return Err(bad("the port must be a number from 1 to 65535")),
            },
            None => default_port,
        };
        let host = authority.host().to_ascii_lowercase();
        let mut url = format!("{scheme}://");
        if let Some(userinfo) = credentials {
            url.push_str(userinfo);
            url.push('@');
        }
        url.push_str(&format!("{host}:{port}"));
        Ok(Self(url.into_boxed_str()))
    }

    /// The whole URL, credentials included: for connecting, never for printing.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `scheme://host:port`: what identifies the proxy in the assignment.
    pub fn identity(&self) -> String {
        let parts = self.parts();
        let scheme = match parts.scheme {
            ProxyScheme::Http => "http",
            ProxyScheme::Socks5 => "socks5",
        };
        format!("{scheme}://{}", parts.authority)
    }

    /// The URL with the password replaced by `***`: safe to print.
    pub fn masked(&self) -> String {
        mask_proxy(&self.0)
    }

    pub fn parts(&self) -> ProxyParts<'_> {
        // Built by `parse`, so the shape is known.
        let (scheme, rest) = self.0.split_once("://").unwrap_or(("http", &self.0));
        let scheme = if scheme == "socks5" {
            ProxyScheme::Socks5
        } else {
            ProxyScheme::Http
        };
        let (credentials, authority) = match rest.rsplit_once('@') {
            Some((userinfo, authority)) => (userinfo.split_once(':'), authority),
            None => (None, rest),
        };
        ProxyParts {
            scheme,
            credentials,
            authority,
        }
    }
}

/// Never prints the password.
impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProxyUrl({})", self.masked())
    }
}

impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// A proxy URL as given, with the password (what follows the first `:` of the part
/// before the last `@`) replaced by `***`. Works on unchecked input, for error messages
/// and admin answers.
pub fn mask_proxy(raw: &str) -> String {
    let (scheme, rest) = match raw.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, raw),
    };
    let masked_rest = match rest.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("***@{host}"),
        },
        None => rest.to_string(),
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{masked_rest}"),
        None => masked_rest,
    }
}

/// Checks a list of proxies: each valid, none twice. At most 64, as the assignment
/// hashes every key against every proxy.
pub fn parse_proxies(raw: &[String]) -> Result<Vec<ProxyUrl>, InvalidResource> {
    const MAX_PROXIES: usize = 64;
    if raw.len() > MAX_PROXIES {
        return Err(InvalidResource::new(
            "proxy",
            "",
            format!(
                "{} proxies given; at most {MAX_PROXIES} per provider",
                raw.len()
            ),
        ));
    }
    let mut out: Vec<ProxyUrl> = Vec::with_capacity(raw.len());
    for r in raw {
        let proxy = ProxyUrl::parse(r)?;
        if out.iter().any(|p| p.identity() == proxy.identity()) {
            return Err(InvalidResource::new(
                "proxy",
                proxy.masked(),
                format!("proxy {} is given twice", proxy.masked()),
            ));
        }
        out.push(proxy);
    }
    Ok(out)
}

/// The rendezvous score of a key on a proxy: FNV-1a over `key id`, a zero byte and the
/// proxy's identity (`scheme://host:port`, without credentials, so that changing a
/// password moves no key and a masked URL scores the same), then the SplitMix64
/// finaliser so that near-equal inputs spread. Fixed forever: changing it would move
/// every key.
pub fn rendezvous_score(key_id: &str, proxy: &ProxyUrl) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let parts = proxy.parts();
    let scheme: &[u8] = match parts.scheme {
        ProxyScheme::Http => b"http://",
        ProxyScheme::Socks5 => b"socks5://",
    };
    let mut hash = OFFSET;
    for &byte in key_id
        .as_bytes()
        .iter()
        .chain(&[0u8])
        .chain(scheme)
        .chain(parts.authority.as_bytes())
    {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(PRIME);
    }
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// The proxy a key without a pinned one goes through: the highest score wins, ties go to
/// the lexically smaller URL (a tie needs two entries of one identity, which
/// [`parse_proxies`] refuses). `None` when there are no proxies (direct).
pub fn assign_proxy<'a>(key_id: &str, proxies: &'a [ProxyUrl]) -> Option<&'a ProxyUrl> {
    proxies.iter().max_by(|a, b| {
        rendezvous_score(key_id, a)
            .cmp(&rendezvous_score(key_id, b))
            .then_with(|| b.expose().cmp(a.expose()))
    })
}

/// Headers a provider may not set: credentials (the key travels in them) and framing,
/// which the client sets.
const RESERVED_HEADERS: [&str; 14] = [
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "x-goog-api-key",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
    "content-encoding",
];

/// Parts of header names whose values are shown masked in admin answers and the CLI.
const SECRET_NAME_PARTS: [&str; 7] = [
    "key",
    "token",
    "secret",
    "auth",
    "cookie",
    "password",
    "signature",
];

/// Whether a header's value should be treated as a secret, judged by its name.
pub fn header_is_secret(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    SECRET_NAME_PARTS.iter().any(|part| lower.contains(part))
}

/// The value of a header as admin answers show it.
pub fn shown_header_value(name: &str, value: &str) -> String {
    if header_is_secret(name) {
        super::mask_secret(value)
    } else {
        value.to_string()
    }
}

/// Checks one provider header: a valid name that is not reserved, a visible value of at
/// most 4096 bytes. Values of secret-looking names are marked sensitive.
pub fn parse_upstream_header(
    name: &str,
    value: &str,
) -> Result<(HeaderName, HeaderValue), InvalidResource> {
    let name = name.trim();
    let bad = |why: String| InvalidResource::new("header", name, format!("header {name:?}: {why}"));
    let header_name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| bad("not a valid header name".into()))?;
    if RESERVED_HEADERS.contains(&header_name.as_str()) {
        return Err(bad(
            "reserved: credentials and framing headers are set by Fulcrum".into(),
        ));
    }
    let value = value.trim();
    if value.len() > 4096 {
        return Err(bad("the value is longer than 4096 bytes".into()));
    }
    let mut header_value = HeaderValue::from_str(value)
        .map_err(|_| bad("the value must be visible ASCII or spaces".into()))?;
    header_value.set_sensitive(header_is_secret(name));
    Ok((header_name, header_value))
}

/// Checks a provider's headers: each valid, no name twice, at most 32.
pub fn parse_upstream_headers<'a>(
    raw: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Vec<(HeaderName, HeaderValue)>, InvalidResource> {
    let mut out: Vec<(HeaderName, HeaderValue)> = Vec::new();
    for (name, value) in raw {
        let (name, value) = parse_upstream_header(name, value)?;
        if out.iter().any(|(n, _)| *n == name) {
            return Err(InvalidResource::new(
                "header",
                name.as_str(),
                format!("header {:?} is given twice", name.as_str()),
            ));
        }
        out.push((name, value));
        if out.len() > 32 {
            return Err(InvalidResource::new(
                "header",
                "",
                "more than 32 headers given",
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls_are_checked_and_normalised() {
        let p = ProxyUrl::parse(" HTTP://Proxy.example:3128/ ").unwrap();
        assert_eq!(p.expose(), "http://proxy.example:3128");
        assert_eq!(p.parts().scheme, ProxyScheme::Http);
        assert_eq!(p.parts().authority, "proxy.example:3128");
        let p = ProxyUrl::parse("socks5://u:p@s@10.0.0.1").unwrap();
        assert_eq!(p.expose(), "socks5://u:p@s@10.0.0.1:1080");
        assert_eq!(p.parts().credentials, Some(("u", "p@s")));
        assert_eq!(p.masked(), "socks5://u:***@10.0.0.1:1080");
        assert_eq!(format!("{p:?}"), "ProxyUrl(socks5://u:***@10.0.0.1:1080)");
        assert_eq!(
            ProxyUrl::parse("http://[::1]:8080").unwrap().expose(),
            "http://[::1]:8080"
        );
        for bad in [
            "proxy:3128",
            "https://proxy:3128",
            "http://proxy:3128/path",
            "http://user@proxy:1",
            "http://:1",
            "http://proxy:0",
            "http://proxy:",
            "http://proxy:99999",
        ] {
            assert!(ProxyUrl::parse(bad).is_err(), "{bad} accepted");
        }
        let err = ProxyUrl::parse("ftp://me:hunter2@proxy").unwrap_err();
        assert!(!err.message.contains("hunter2"), "{}", err.message);
        assert!(parse_proxies(&["http://a:1".into(), "HTTP://a:1".into()]).is_err());
        assert!(parse_proxies(&["http://a:1".into(), "http://u:p@a:1".into()]).is_err());
    }

    /// `rendezvous_score("0123456789abcdef", http://a:1)`, checked against an independent
    /// implementation (FNV-1a 64 then SplitMix64's finaliser, in Python).
    const GOLDEN_SCORE: u64 = 11_049_509_906_800_890_264;

    #[test]
    fn assignment_is_stable_and_moves_few_keys() {
        let three = parse_proxies(&[
            "http://a:1".into(),
            "socks5://b:2".into(),
            "http://c:3".into(),
        ])
        .unwrap();
        // Fixed forever: these ids must keep these proxies across releases.
        assert_eq!(
            rendezvous_score("0123456789abcdef", &three[0]),
            GOLDEN_SCORE,
            "the score changed: every key would move to another proxy"
        );
        let ids: Vec<String> = (0..3000u32).map(|i| format!("{i:016x}")).collect();
        let mut counts = [0usize; 3];
        for id in &ids {
            let chosen = assign_proxy(id, &three).unwrap();
            counts[three.iter().position(|p| p == chosen).unwrap()] += 1;
        }
        for count in counts {
            assert!((800..1200).contains(&count), "uneven spread {counts:?}");
        }
        // The order of the list does not matter.
        let reversed: Vec<ProxyUrl> = three.iter().rev().cloned().collect();
        assert!(
            ids.iter()
                .all(|id| assign_proxy(id, &three) == assign_proxy(id, &reversed))
        );
        // Credentials are not part of the identity: a masked URL is assigned the same keys.
        let with_password = parse_proxies(&["http://u:secret@a:1".into()]).unwrap();
        let masked = ProxyUrl::parse(&with_password[0].masked()).unwrap();
        assert_eq!(
            rendezvous_score("0123456789abcdef", &with_password[0]),
            rendezvous_score("0123456789abcdef", &masked)
        );
        assert_eq!(
            rendezvous_score("0123456789abcdef", &three[0]),
            rendezvous_score("0123456789abcdef", &masked)
        );
        // A fourth proxy takes about a quarter of the keys, and only from the others.
        let mut four = three.clone();
        four.push(ProxyUrl::parse("http://d:4").unwrap());
        let moved: Vec<&String> = ids
            .iter()
            .filter(|id| assign_proxy(id, &three) != assign_proxy(id, &four))
            .collect();
        assert!((600..900).contains(&moved.len()), "{} moved", moved.len());
        assert!(
            moved
                .iter()
                .all(|id| assign_proxy(id, &four) == Some(&four[3]))
        );
        assert_eq!(assign_proxy("0123456789abcdef", &[]), None);
    }

    #[test]
    fn headers_are_checked() {
        let (name, value) = parse_upstream_header("OpenAI-Organization", " org-1 ").unwrap();
        assert_eq!(name.as_str(), "openai-organization");
        assert_eq!(value, "org-1");
        assert!(!value.is_sensitive());
        let (_, value) = parse_upstream_header("X-Portkey-Api-Key", "secretvalue123").unwrap();
        assert!(value.is_sensitive());
        assert_eq!(
            shown_header_value("X-Portkey-Api-Key", "secretvalue123"),
            "se...23"
        );
        for name in [
            "Authorization",
            "x-api-key",
            "X-Goog-Api-Key",
            "Host",
            "bad name",
        ] {
            assert!(parse_upstream_header(name, "v").is_err(), "{name} accepted");
        }
        assert!(parse_upstream_header("x-a", "line\nbreak").is_err());
        assert!(parse_upstream_headers([("x-a", "1"), ("X-A", "2")]).is_err());
    }
}
