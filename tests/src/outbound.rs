//! Outbound proxies on loopback for tests: an HTTP CONNECT proxy and a SOCKS5 proxy, each
//! a small tokio server that checks credentials, opens the tunnel, counts tunnels per
//! target and keeps what the client sent through them (the mock upstream speaks plain
//! HTTP, so the requests can be read back).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Which protocol a [`ProxyServer`] speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    HttpConnect,
    Socks5,
}

#[derive(Debug, Default)]
struct Seen {
    /// Tunnels opened, by `host:port` asked for.
    tunnels: HashMap<String, usize>,
    /// Handshakes refused (wrong or missing credentials, unsupported requests).
    refused: usize,
    /// Everything clients sent through each tunnel, in order.
    sent: Vec<Arc<Mutex<Vec<u8>>>>,
}

/// A running proxy; stops when dropped.
pub struct ProxyServer {
    pub addr: SocketAddr,
    pub kind: ProxyKind,
    credentials: Option<(String, String)>,
    seen: Arc<Mutex<Seen>>,
    task: JoinHandle<()>,
}

impl Drop for ProxyServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(seen: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ProxyServer {
    /// Starts one on `127.0.0.1:0`; with `credentials`, clients must present them.
    pub async fn start(kind: ProxyKind, credentials: Option<(&str, &str)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("bound");
        let credentials = credentials.map(|(u, p)| (u.to_string(), p.to_string()));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let task = tokio::spawn({
            let credentials = credentials.clone();
            let seen = Arc::clone(&seen);
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let credentials = credentials.clone();
                    let seen = Arc::clone(&seen);
                    tokio::spawn(async move {
                        let _ = serve(kind, stream, credentials, seen).await;
                    });
                }
            }
        });
        Self {
            addr,
            kind,
            credentials,
            seen,
            task,
        }
    }

    /// The URL to configure, with the credentials if any.
    pub fn url(&self) -> String {
        let scheme = match self.kind {
            ProxyKind::HttpConnect => "http",
            ProxyKind::Socks5 => "socks5",
        };
        match &self.credentials {
            Some((user, password)) => format!("{scheme}://{user}:{password}@{}", self.addr),
            None => format!("{scheme}://{}", self.addr),
        }
    }

    /// Tunnels opened so far, to any target.
    pub fn tunnels(&self) -> usize {
        lock(&self.seen).tunnels.values().sum()
    }

    /// Tunnels opened to `target` (`host:port`).
    pub fn tunnels_to(&self, target: &str) -> usize {
        lock(&self.seen).tunnels.get(target).copied().unwrap_or(0)
    }

    pub fn refused(&self) -> usize {
        lock(&self.seen).refused
    }

    /// How many times `needle` occurs in what clients sent through the tunnels.
    pub fn sent_count(&self, needle: &str) -> usize {
        let seen = lock(&self.seen);
        let needle = needle.as_bytes();
        seen.sent
            .iter()
            .map(|bytes| {
                let bytes = bytes.lock().unwrap_or_else(PoisonError::into_inner);
                bytes.windows(needle.len()).filter(|w| *w == needle).count()
            })
            .sum()
    }
}

async fn serve(
    kind: ProxyKind,
    mut client: TcpStream,
    credentials: Option<(String, String)>,
    seen: Arc<Mutex<Seen>>,
) -> std::io::Result<()> {
    let opened = match kind {
        ProxyKind::HttpConnect => http_connect(&mut client, credentials.as_ref()).await?,
        ProxyKind::Socks5 => socks5(&mut client, credentials.as_ref()).await?,
    };
    let Some((target, upstream, early)) = opened else {
        lock(&seen).refused += 1;
        return Ok(());
    };
    let sent = Arc::new(Mutex::new(early.clone()));
    {
        let mut seen = lock(&seen);
        *seen.tunnels.entry(target).or_default() += 1;
        seen.sent.push(Arc::clone(&sent));
    }
    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    upstream_write.write_all(&early).await?;
    let up = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = client_read.read(&mut buf).await?;
            if n == 0 {
                upstream_write.shutdown().await?;
                return Ok::<_, std::io::Error>(());
            }
            sent.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(&buf[..n]);
            upstream_write.write_all(&buf[..n]).await?;
        }
    };
    let down = async move {
        tokio::io::copy(&mut upstream_read, &mut client_write).await?;
        client_write.shutdown().await
    };
    let _ = tokio::join!(up, down);
    Ok(())
}

/// `CONNECT host:port`, with `Proxy-Authorization: Basic` when credentials are set. Returns
/// the target, the connection to it and any bytes the client sent after the request.
async fn http_connect(
    client: &mut TcpStream,
    credentials: Option<&(String, String)>,
) -> std::io::Result<Option<(String, TcpStream, Vec<u8>)>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let end = loop {
        let n = client.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if head.len() > 16 * 1024 {
            return Ok(None);
        }
    };
    let early = head[end..].to_vec();
    let text = String::from_utf8_lossy(&head[..end]).into_owned();
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some("CONNECT"), Some(target)) = (parts.next(), parts.next()) else {
        client
            .write_all(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
            .await?;
        return Ok(None);
    };
    if let Some((user, password)) = credentials {
        let expected = format!("basic {}", base64(format!("{user}:{password}").as_bytes()));
        let given = lines.find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("proxy-authorization")
                .then(|| value.trim().to_string())
        });
        let ok = given.is_some_and(|g| {
            let (scheme, token) = g.split_once(' ').unwrap_or((&g, ""));
            format!("{} {}", scheme.to_ascii_lowercase(), token.trim()) == expected
        });
        if !ok {
            client
                .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nproxy-authenticate: Basic realm=\"test\"\r\ncontent-length: 0\r\n\r\n")
                .await?;
            return Ok(None);
        }
    }
    let target = target.to_string();
    let Ok(upstream) = TcpStream::connect(&target).await else {
        client
            .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
            .await?;
        return Ok(None);
    };
    client
        .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .await?;
    Ok(Some((target, upstream, early)))
}

/// RFC 1928 CONNECT with "no authentication" or RFC 1929 user/password.
async fn socks5(
    client: &mut TcpStream,
    credentials: Option<&(String, String)>,
) -> std::io::Result<Option<(String, TcpStream, Vec<u8>)>> {
    let [version, methods] = read_array::<2>(client).await?;
    if version != 5 {
        return Ok(None);
    }
    let offered = read_vec(client, usize::from(methods)).await?;
    let wanted = if credentials.is_some() { 2 } else { 0 };
    if !offered.contains(&wanted) {
        client.write_all(&[5, 0xff]).await?;
        return Ok(None);
    }
    client.write_all(&[5, wanted]).await?;
    if let Some((user, password)) = credentials {
        let [_, user_len] = read_array::<2>(client).await?;
        let given_user = read_vec(client, usize::from(user_len)).await?;
        let [password_len] = read_array::<1>(client).await?;
        let given_password = read_vec(client, usize::from(password_len)).await?;
        if given_user != user.as_bytes() || given_password != password.as_bytes() {
            client.write_all(&[1, 1]).await?;
            return Ok(None);
        }
        client.write_all(&[1, 0]).await?;
    }
    let [_, command, _, address_type] = read_array::<4>(client).await?;
    let host = match address_type {
        1 => {
            let ip = read_array::<4>(client).await?;
            std::net::Ipv4Addr::from(ip).to_string()
        }
        3 => {
            let [len] = read_array::<1>(client).await?;
            String::from_utf8_lossy(&read_vec(client, usize::from(len)).await?).into_owned()
        }
        4 => {
            let ip = read_array::<16>(client).await?;
            format!("[{}]", std::net::Ipv6Addr::from(ip))
        }
        _ => return Ok(None),
    };
    let port = u16::from_be_bytes(read_array::<2>(client).await?);
    if command != 1 {
        client.write_all(&[5, 7, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
        return Ok(None);
    }
    let target = format!("{host}:{port}");
    let Ok(upstream) = TcpStream::connect(&target).await else {
        client.write_all(&[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
        return Ok(None);
    };
    client.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
    Ok(Some((target, upstream, Vec::new())))
}

async fn read_array<const N: usize>(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
) -> std::io::Result<[u8; N]> {
    let mut out = [0u8; N];
    stream.read_exact(&mut out).await?;
    Ok(out)
}

async fn read_vec(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    len: usize,
) -> std::io::Result<Vec<u8>> {
    let mut out = vec![0u8; len];
    stream.read_exact(&mut out).await?;
    Ok(out)
}

/// Standard base64 with padding.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}
