//! A real HTTP/1.1 file server on 127.0.0.1 with fault injection, for end-to-end tests.
//!
//! ```ignore
//! let srv = HttpServer::start(fixtures_dir().join("spack-v3"));
//! srv.set_fault("/blobs/", Fault::Status { status: 503, times: 2 });
//! let url = format!("{}/v3/layout.json", srv.base_url());
//! // … run the code under test against srv.base_url() …
//! assert_eq!(srv.requests("/v3/layout.json"), 1);
//! ```
//!
//! What it does:
//! - serves files under `root` for `GET` and `HEAD` (other methods: 405); directories and
//!   missing files: 404; `..` in paths: 400;
//! - `Range: bytes=a-`, `bytes=a-b`, `bytes=-n` → 206 with `Content-Range`; unsatisfiable → 416;
//! - `ETag: "<sha256 of the file, hex>"`; `If-None-Match` with that tag → 304;
//! - HTTP/1.1 keep-alive (closed after 5 s idle, on `Connection: close`, after an HTTP/1.0
//!   request, and after every faulty response);
//! - accepts absolute-form targets (`GET http://host/path HTTP/1.1`), so it can also play the
//!   role of a forward proxy in proxy tests ([`RequestRecord::target`] keeps the raw target);
//! - records every request (method, raw target, path, headers) — see [`HttpServer::log`] and
//!   [`HttpServer::requests`];
//! - optional required `Authorization` value ([`HttpServer::require_auth`]) → 401 otherwise;
//! - faults per path prefix ([`Fault`]), each for the first `times` matching requests only;
//! - bounded: one thread per connection (at most 64 at once), socket read/write timeouts, and
//!   everything stops when the server is dropped. Never loops forever.
//!
//! Only `std` and `sha2`/`hex` (crate dependencies) are used.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// Use as `times` for a fault that never wears off.
pub const ALWAYS: u32 = u32::MAX;

const MAX_CONNECTIONS: usize = 64;
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_HEADER_BYTES: usize = 64 * 1024;
const CHUNK: usize = 16 * 1024;

/// A fault injected into responses for paths under a prefix (see [`HttpServer::set_fault`]).
/// Each applies to the first `times` matching requests, then the server behaves normally.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status (empty body), e.g. 404, 500, 503.
    Status { status: u16, times: u32 },
    /// Send the headers (correct Content-Length) and `bytes` body bytes, then reset/close the
    /// connection abruptly (`shutdown(Both)`).
    DropAfter { bytes: u64, times: u32 },
    /// Send the headers with the full Content-Length but only `bytes` body bytes, then close the
    /// connection cleanly (a truncated body as seen from the client).
    Truncate { bytes: u64, times: u32 },
    /// Send the body in `chunk`-byte pieces with `delay` before each one.
    Slow {
        chunk: usize,
        delay: Duration,
        times: u32,
    },
    /// Declare `Content-Length` = real length + `delta` (may be negative), send the real body,
    /// close the connection.
    WrongLength { delta: i64, times: u32 },
    /// Ignore `Range` headers: answer 200 with the whole file.
    IgnoreRange { times: u32 },
    /// Serve the file with its first byte flipped (same length; sha256 no longer matches).
    Corrupt { times: u32 },
}

impl Fault {
    fn times(&self) -> u32 {
        match self {
            Fault::Status { times, .. }
            | Fault::DropAfter { times, .. }
            | Fault::Truncate { times, .. }
            | Fault::Slow { times, .. }
            | Fault::WrongLength { times, .. }
            | Fault::IgnoreRange { times }
            | Fault::Corrupt { times } => *times,
        }
    }
}

/// One request as received.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    pub method: String,
    /// The raw request target (origin-form `/a/b` or absolute-form `http://h/a/b`).
    pub target: String,
    /// The decoded path, always starting with `/` (query removed).
    pub path: String,
    /// Header names lowercased, in order received.
    pub headers: Vec<(String, String)>,
}

impl RequestRecord {
    /// First header value with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct State {
    /// (prefix, fault, remaining count)
    faults: Vec<(String, Fault, u32)>,
    log: Vec<RequestRecord>,
    required_auth: Option<String>,
}

struct Shared {
    root: PathBuf,
    stop: AtomicBool,
    connections: AtomicUsize,
    state: Mutex<State>,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panicking connection thread must not poison the whole test.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running server. Stops (and frees its port) when dropped.
pub struct HttpServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Serve `root` on `127.0.0.1:<free port>`.
    pub fn start(root: impl Into<PathBuf>) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local_addr");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let shared = Arc::new(Shared {
            root: root.into(),
            stop: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            state: Mutex::new(State::default()),
        });
        let sh = shared.clone();
        let accept_thread = std::thread::Builder::new()
            .name(format!("http-server-{}", addr.port()))
            .spawn(move || accept_loop(listener, sh))
            .expect("spawn server thread");
        HttpServer {
            addr,
            shared,
            accept_thread: Some(accept_thread),
        }
    }

    /// `http://127.0.0.1:<port>` (no trailing slash).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `base_url()` + `/` + `path` (leading slash optional).
    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base_url(), path.trim_start_matches('/'))
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Inject `fault` for request paths starting with `path_prefix` (leading `/` optional).
    /// Faults are checked in the order they were set; the first one still active wins.
    pub fn set_fault(&self, path_prefix: &str, fault: Fault) {
        let prefix = format!("/{}", path_prefix.trim_start_matches('/'));
        let times = fault.times();
        self.shared.state().faults.push((prefix, fault, times));
    }

    /// Remove all faults.
    pub fn clear_faults(&self) {
        self.shared.state().faults.clear();
    }

    /// Require this exact `Authorization` header value on every request (401 otherwise);
    /// `None` to stop requiring it.
    pub fn require_auth(&self, value: Option<&str>) {
        self.shared.state().required_auth = value.map(str::to_string);
    }

    /// Number of requests received for exactly this path (leading `/` optional).
    pub fn requests(&self, path: &str) -> usize {
        let path = format!("/{}", path.trim_start_matches('/'));
        self.shared
            .state()
            .log
            .iter()
            .filter(|r| r.path == path)
            .count()
    }

    /// Number of requests received for paths starting with `prefix`.
    pub fn requests_under(&self, prefix: &str) -> usize {
        let prefix = format!("/{}", prefix.trim_start_matches('/'));
        self.shared
            .state()
            .log
            .iter()
            .filter(|r| r.path.starts_with(&prefix))
            .count()
    }

    /// All requests so far, in arrival order.
    pub fn log(&self) -> Vec<RequestRecord> {
        self.shared.state().log.clone()
    }

    /// Total number of requests so far.
    pub fn total_requests(&self) -> usize {
        self.shared.state().log.len()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept_thread.take() {
            let _ = t.join();
        }
        // Connection threads notice `stop` between requests and body chunks, and are bounded
        // by socket timeouts; they are not joined so that a stuck client cannot hang a test.
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                while shared.connections.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
                    if shared.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let sh = shared.clone();
                let spawned =
                    std::thread::Builder::new()
                        .name("http-conn".into())
                        .spawn(move || {
                            let _ = handle_connection(stream, &sh);
                            sh.connections.fetch_sub(1, Ordering::SeqCst);
                        });
                if spawned.is_err() {
                    shared.connections.fetch_sub(1, Ordering::SeqCst);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

struct Request {
    record: RequestRecord,
    close: bool,
}

/// Read one request head; `Ok(None)` on a clean EOF / idle timeout.
fn read_request(reader: &mut BufReader<TcpStream>) -> std::io::Result<Option<Request>> {
    let mut head = Vec::new();
    let mut total = 0usize;
    loop {
        let mut line = Vec::new();
        let n = match reader.read_until(b'\n', &mut line) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(None);
        }
        total += n;
        if total > MAX_HEADER_BYTES {
            return Ok(None);
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        if text.is_empty() {
            if head.is_empty() {
                continue; // tolerate stray CRLF between requests
            }
            break;
        }
        head.push(text);
    }
    let mut parts = head[0].split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let version = parts.next().unwrap_or("HTTP/1.0").to_string();
    let headers: Vec<(String, String)> = head[1..]
        .iter()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    // Discard a request body, if any (we never expect one).
    if let Some(len) = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<u64>().ok())
    {
        let _ = std::io::copy(&mut reader.by_ref().take(len), &mut std::io::sink());
    }
    let conn_hdr = headers
        .iter()
        .find(|(k, _)| k == "connection")
        .map(|(_, v)| v.to_ascii_lowercase());
    let close = version == "HTTP/1.0" || conn_hdr.as_deref() == Some("close");
    // Absolute-form (proxy requests): strip scheme://authority.
    let origin_form = match target.split_once("://") {
        Some((_, rest)) => match rest.find('/') {
            Some(i) => rest[i..].to_string(),
            None => "/".to_string(),
        },
        None => target.clone(),
    };
    let raw_path = origin_form.split(['?', '#']).next().unwrap_or("/");
    let path = percent_decode(raw_path);
    Ok(Some(Request {
        record: RequestRecord {
            method,
            target,
            path,
            headers,
        },
        close,
    }))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn status_text(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

fn write_simple(
    stream: &mut TcpStream,
    status: u16,
    extra: &str,
    close: bool,
) -> std::io::Result<()> {
    let conn = if close { "close" } else { "keep-alive" };
    write!(
        stream,
        "HTTP/1.1 {status} {}\r\nContent-Length: 0\r\nConnection: {conn}\r\n{extra}\r\n",
        status_text(status)
    )?;
    stream.flush()
}

fn handle_connection(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let _ = stream.set_nodelay(true);
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let Some(req) = read_request(&mut reader)? else {
            return Ok(());
        };
        let keep_going = respond(&mut writer, shared, req)?;
        if !keep_going {
            let _ = writer.shutdown(Shutdown::Both);
            return Ok(());
        }
    }
}

/// Take the first active fault for `path`, decrementing its count.
fn take_fault(shared: &Shared, path: &str) -> Option<Fault> {
    let mut st = shared.state();
    for (prefix, fault, remaining) in st.faults.iter_mut() {
        if path.starts_with(prefix.as_str()) && *remaining > 0 {
            if *remaining != ALWAYS {
                *remaining -= 1;
            }
            return Some(fault.clone());
        }
    }
    None
}

fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let rel = Path::new(path.trim_start_matches('/'));
    let mut out = root.to_path_buf();
    for c in rel.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

fn file_etag(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("\"{}\"", hex::encode(h.finalize())))
}

/// Parse a single `bytes=` range against `len` → Some(Ok((start, end_inclusive))) or
/// Some(Err(())) when unsatisfiable; None when absent or not understood (serve everything).
fn parse_range(value: Option<&str>, len: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = value?.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None; // multi-range: ignore, serve everything
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 || len == 0 {
            return Some(Err(()));
        }
        return Some(Ok((len.saturating_sub(n), len - 1)));
    }
    let start: u64 = a.parse().ok()?;
    if start >= len {
        return Some(Err(()));
    }
    let end = if b.is_empty() {
        len - 1
    } else {
        b.parse::<u64>().ok()?.min(len - 1)
    };
    if end < start {
        return None;
    }
    Some(Ok((start, end)))
}

/// Write one response. Returns whether the connection may be kept open.
fn respond(w: &mut TcpStream, shared: &Shared, req: Request) -> std::io::Result<bool> {
    let rec = req.record;
    let close = req.close;
    let path = rec.path.clone();
    let method = rec.method.clone();
    let auth = rec.header("authorization").map(str::to_string);
    let if_none_match = rec.header("if-none-match").map(str::to_string);
    let range = rec.header("range").map(str::to_string);
    let required = {
        let mut st = shared.state();
        st.log.push(rec);
        st.required_auth.clone()
    };

    if method != "GET" && method != "HEAD" {
        write_simple(w, 405, "Allow: GET, HEAD\r\n", close)?;
        return Ok(!close);
    }
    if let Some(required) = required {
        if auth.as_deref() != Some(required.as_str()) {
            write_simple(w, 401, "WWW-Authenticate: Basic realm=\"test\"\r\n", close)?;
            return Ok(!close);
        }
    }
    let fault = take_fault(shared, &path);
    if let Some(Fault::Status { status, .. }) = fault {
        write_simple(w, status, "", close)?;
        return Ok(!close);
    }
    let Some(file) = resolve(&shared.root, &path) else {
        write_simple(w, 400, "", close)?;
        return Ok(!close);
    };
    let meta = match std::fs::metadata(&file) {
        Ok(m) if m.is_file() => m,
        _ => {
            write_simple(w, 404, "", close)?;
            return Ok(!close);
        }
    };
    let len = meta.len();
    let etag = file_etag(&file)?;
    if if_none_match
        .as_deref()
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        write_simple(w, 304, &format!("ETag: {etag}\r\n"), close)?;
        return Ok(!close);
    }

    let ignore_range = matches!(fault, Some(Fault::IgnoreRange { .. }));
    let range = if ignore_range {
        None
    } else {
        parse_range(range.as_deref(), len)
    };
    let (status, start, end) = match range {
        Some(Err(())) => {
            write_simple(w, 416, &format!("Content-Range: bytes */{len}\r\n"), close)?;
            return Ok(!close);
        }
        Some(Ok((s, e))) => (206u16, s, e),
        None => (200u16, 0, len.saturating_sub(1)),
    };
    let body_len = if len == 0 { 0 } else { end - start + 1 };
    let faulty = fault.is_some() && !ignore_range;
    let close_after = close || faulty;
    let declared = match &fault {
        Some(Fault::WrongLength { delta, .. }) => (body_len as i64 + delta).max(0) as u64,
        _ => body_len,
    };
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Length: {declared}\r\nContent-Type: application/octet-stream\r\n\
         Accept-Ranges: bytes\r\nETag: {etag}\r\nConnection: {}\r\n",
        status_text(status),
        if close_after { "close" } else { "keep-alive" }
    );
    if status == 206 {
        head.push_str(&format!("Content-Range: bytes {start}-{end}/{len}\r\n"));
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes())?;
    if method == "HEAD" {
        w.flush()?;
        return Ok(!close_after);
    }

    // Body: stream from disk, applying the fault.
    let limit = match &fault {
        Some(Fault::DropAfter { bytes, .. }) | Some(Fault::Truncate { bytes, .. }) => {
            (*bytes).min(body_len)
        }
        _ => body_len,
    };
    let (chunk, delay) = match &fault {
        Some(Fault::Slow { chunk, delay, .. }) => ((*chunk).max(1), Some(*delay)),
        _ => (CHUNK, None),
    };
    let corrupt = matches!(fault, Some(Fault::Corrupt { .. }));
    let mut f = std::fs::File::open(&file)?;
    f.seek(SeekFrom::Start(start))?;
    let mut sent = 0u64;
    let mut buf = vec![0u8; chunk];
    while sent < limit {
        if shared.stop.load(Ordering::SeqCst) {
            let _ = w.shutdown(Shutdown::Both);
            return Ok(false);
        }
        if let Some(d) = delay {
            std::thread::sleep(d);
        }
        let want = ((limit - sent) as usize).min(chunk);
        let n = f.read(&mut buf[..want])?;
        if n == 0 {
            break;
        }
        if corrupt && start + sent == 0 {
            buf[0] ^= 0xff;
        }
        if w.write_all(&buf[..n]).is_err() {
            return Ok(false); // client went away (e.g. it timed out on a slow body)
        }
        let _ = w.flush();
        sent += n as u64;
    }
    w.flush()?;
    match fault {
        Some(Fault::DropAfter { .. }) => {
            let _ = w.shutdown(Shutdown::Both);
            Ok(false)
        }
        _ => Ok(!close_after),
    }
}

/// Small helper for tests: a map of path → request count.
pub fn counts(log: &[RequestRecord]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for r in log {
        *m.entry(r.path.clone()).or_insert(0) += 1;
    }
    m
}
