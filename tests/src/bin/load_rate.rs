//! `load-rate`: an open-loop HTTP/1.1 load generator for the latency rows of
//! `bench/proxy.sh`.
//!
//! wrk is closed-loop: a connection sends its next request only after the last answer (and
//! its think time). With a fixed think time every connection keeps the phase it started
//! with, so 128 connections send 128 requests at once, every cycle, and the p99 measures how
//! long a proxy takes to work off such a burst. Real clients arrive independently. Here
//! requests are due at the moments of a Poisson process at `--rate` per second (a
//! dedicated thread wakes for each), whatever the answers do; a due request goes out on
//! the first free one of `--connections` keep-alive connections, and its latency counts
//! from the moment it was due, so time spent waiting for a free connection is counted too
//! (no coordinated omission).
//!
//! ```text
//! load-rate --url http://127.0.0.1:8080/v1/chat/completions --rate 12000 \
//!     [--connections 128] [--duration 10] [--warmup 3] [--body JSON] [--header 'K: V']...
//! ```
//!
//! Prints one line of `key=value` pairs: requests measured, errors, non-2xx answers,
//! requests that never went out before the end, the rate reached, and p50 / p90 / p99 /
//! p99.9 / max latency in microseconds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, mpsc};

#[derive(Debug, Parser)]
#[command(
    name = "load-rate",
    about = "Open-loop HTTP/1.1 load at a fixed mean rate (Poisson arrivals), latency from each request's due time"
)]
struct Args {
    /// http:// URL to POST to (GET without --body).
    #[arg(long)]
    url: String,
    /// Mean requests per second.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    rate: u32,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    connections: u32,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    /// Request body (POST); none sends GET.
    #[arg(long)]
    body: Option<String>,
    /// Extra request header, `Name: value` (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Seed of the arrival times.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// A request that is due: when it was due, and whether it counts.
#[derive(Clone, Copy)]
struct Due {
    at: Instant,
    measured: bool,
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    errors: u64,
    non_2xx: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !(args.duration > 0.0 && args.warmup >= 0.0) {
        bail!("--duration must be above 0 and --warmup at least 0");
    }
    let target = Target::parse(&args.url)?;
    let request = Arc::new(target.request(args.body.as_deref(), &args.headers));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args, target, request))
}

async fn run(args: Args, target: Target, request: Arc<Vec<u8>>) -> anyhow::Result<()> {
    let mut connections = Vec::new();
    for _ in 0..args.connections {
        connections.push(
            TcpStream::connect(&target.addr)
                .await
                .with_context(|| format!("cannot connect to {}", target.addr))?,
        );
    }
    let (due_tx, due_rx) = mpsc::unbounded_channel::<Due>();
    let due_rx = Arc::new(Mutex::new(due_rx));
    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let end = measure_from + Duration::from_secs_f64(args.duration);
    // Answers still owed after this are given up on: the rest counts as not sent.
    let give_up = end + Duration::from_secs(2);

    let rate = f64::from(args.rate);
    let seed = args.seed;
    let clock = std::thread::spawn(move || arrivals(seed, rate, start, measure_from, end, &due_tx));

    let mut workers = Vec::new();
    for stream in connections {
        let due_rx = Arc::clone(&due_rx);
        let request = Arc::clone(&request);
        let addr = target.addr.clone();
        workers.push(tokio::spawn(async move {
            let mut conn = Some(stream);
            let mut tally = Tally::default();
            loop {
                let due = {
                    let mut rx = due_rx.lock().await;
                    match tokio::time::timeout_at(give_up.into(), rx.recv()).await {
                        Ok(Some(due)) => due,
                        Ok(None) | Err(_) => break,
                    }
                };
                if Instant::now() >= give_up {
                    break;
                }
                let answer = match conn.as_mut() {
                    Some(stream) => exchange(stream, &request).await,
                    None => match TcpStream::connect(&addr).await {
                        Ok(stream) => exchange(conn.insert(stream), &request).await,
                        Err(e) => Err(e.into()),
                    },
                };
                let done = Instant::now();
                match answer {
                    Ok(answer) => {
                        if !answer.keep_alive {
                            conn = None;
                        }
                        if due.measured {
                            let us = done.saturating_duration_since(due.at).as_micros();
                            tally
                                .latencies_us
                                .push(u32::try_from(us).unwrap_or(u32::MAX));
                            if !(200..300).contains(&answer.status) {
                                tally.non_2xx += 1;
                            }
                        }
                    }
                    Err(_) => {
                        conn = None;
                        if due.measured {
                            tally.errors += 1;
                        }
                    }
                }
            }
            tally
        }));
    }
    let mut all = Tally::default();
    for worker in workers {
        let tally = worker.await.context("a connection task failed")?;
        all.latencies_us.extend(tally.latencies_us);
        all.errors += tally.errors;
        all.non_2xx += tally.non_2xx;
    }
    let (due_total, measured_total) = clock
        .join()
        .map_err(|_| anyhow::anyhow!("the arrival clock panicked"))?;
    let not_sent = measured_total
        .saturating_sub(all.latencies_us.len() as u64)
        .saturating_sub(all.errors);
    all.latencies_us.sort_unstable();
    let pct = |p: f64| -> u32 {
        if all.latencies_us.is_empty() {
            return 0;
        }
        // Nearest rank.
        let rank = (p / 100.0 * all.latencies_us.len() as f64).ceil() as usize;
        all.latencies_us[rank.clamp(1, all.latencies_us.len()) - 1]
    };
    println!(
        "requests={} errors={} non2xx={} not_sent={} due={} rate={:.0} p50_us={} p90_us={} p99_us={} p999_us={} max_us={}",
        all.latencies_us.len(),
        all.errors,
        all.non_2xx,
        not_sent,
        due_total,
        all.latencies_us.len() as f64 / args.duration,
        pct(50.0),
        pct(90.0),
        pct(99.0),
        pct(99.9),
        all.latencies_us.last().copied().unwrap_or(0),
    );
    Ok(())
}

/// Sends each request at its due time, a Poisson process of `rate` per second from `start`
/// to `end`. Its own thread: the runtime's timer has a resolution of one millisecond, which
/// would bunch arrivals into bursts. Returns how many were due, and how many of those were
/// measured.
fn arrivals(
    seed: u64,
    rate: f64,
    start: Instant,
    measure_from: Instant,
    end: Instant,
    due_tx: &mpsc::UnboundedSender<Due>,
) -> (u64, u64) {
    let mut random = SplitMix64(seed);
    let mut at = start;
    let (mut due, mut measured) = (0u64, 0u64);
    loop {
        // Exponential gaps; 1 - u is in (0, 1], so the logarithm is finite.
        let gap = -(1.0 - random.unit()).ln() / rate;
        at += Duration::from_secs_f64(gap);
        if at >= end {
            return (due, measured);
        }
        let now = Instant::now();
        if at > now {
            std::thread::sleep(at - now);
        }
        let counts = at >= measure_from;
        due += 1;
        measured += u64::from(counts);
        if due_tx
            .send(Due {
                at,
                measured: counts,
            })
            .is_err()
        {
            return (due, measured);
        }
    }
}

/// SplitMix64: enough randomness for arrival times, without a crate.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Target {
    addr: String,
    host: String,
    path: String,
}

impl Target {
    fn parse(url: &str) -> anyhow::Result<Self> {
        let Some(rest) = url.strip_prefix("http://") else {
            bail!("--url must start with http:// (got {url:?})");
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            bail!("--url has no host: {url:?}");
        }
        let addr = if authority.contains(':') {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        Ok(Self {
            addr,
            host: authority.to_string(),
            path: path.to_string(),
        })
    }

    fn request(&self, body: Option<&str>, headers: &[String]) -> Vec<u8> {
        let method = if body.is_some() { "POST" } else { "GET" };
        let mut head = format!("{method} {} HTTP/1.1\r\nHost: {}\r\n", self.path, self.host);
        for header in headers {
            head.push_str(header.trim());
            head.push_str("\r\n");
        }
        if let Some(body) = body {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        request.extend_from_slice(body.unwrap_or("").as_bytes());
        request
    }
}

struct Answer {
    status: u16,
    keep_alive: bool,
}

/// Writes one request and reads its whole answer (`content-length` or chunked).
async fn exchange(stream: &mut TcpStream, request: &[u8]) -> anyhow::Result<Answer> {
    stream.write_all(request).await?;
    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        read_more(stream, &mut buf).await?;
    };
    let head = std::str::from_utf8(&buf[..head_end]).context("answer head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let (mut length, mut chunked, mut keep_alive) = (None, false, true);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().context("bad content-length")?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            keep_alive = !value.eq_ignore_ascii_case("close");
        }
    }
    let mut body = buf.split_off(head_end);
    if chunked {
        // Chunk sizes, walked until the zero chunk and the blank line after it.
        let mut at = 0;
        loop {
            let line_end = loop {
                if let Some(i) = find(&body[at..], b"\r\n") {
                    break at + i;
                }
                read_more(stream, &mut body).await?;
            };
            let size_text = std::str::from_utf8(&body[at..line_end])?;
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .with_context(|| format!("bad chunk size {size_text:?}"))?;
            at = line_end + 2;
            if size == 0 {
                while find(&body[at..], b"\r\n").is_none() {
                    read_more(stream, &mut body).await?;
                }
                break;
            }
            while body.len() < at + size + 2 {
                read_more(stream, &mut body).await?;
            }
            at += size + 2;
        }
    } else if let Some(length) = length {
        while body.len() < length {
            read_more(stream, &mut body).await?;
        }
    } else {
        bail!("answer has neither content-length nor chunked encoding");
    }
    Ok(Answer { status, keep_alive })
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<()> {
    buf.reserve(4096);
    if stream.read_buf(buf).await? == 0 {
        bail!("connection closed mid-answer");
    }
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
