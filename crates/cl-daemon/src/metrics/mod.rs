//! cldaemon's Prometheus endpoint: `GET /metrics` over HTTP/1.1 on the address of
//! `<global>/<metrics>` in clconf.xml (off without it).
//!
//! Everything is rendered from the status snapshot the manager publishes (the one clstat
//! reads), plus a [`History`] of what consecutive snapshots showed happening (restarts, fence
//! attempts, failovers and how long they took). Nothing here decides anything, and a scrape
//! never waits on the manager's loop.
//!
//! The text is written by hand ([`render`]) rather than with the `prometheus-client` crate:
//! that crate keeps live metric objects in a registry and writes OpenMetrics, while this is a
//! pure function of one snapshot whose series come and go with it (applications, volumes).

mod history;
mod render;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cl_wire::msg::ClusterStatus;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{error, info};

pub use history::{Failovers, Histogram, History, FAILOVER_BUCKETS};
pub use render::{render, CONTENT_TYPE};

use crate::context::Context;
use crate::serve::{Conn, Limits};

/// The longest request head read (request line and headers); a scraper sends a few hundred
/// bytes.
pub const MAX_REQUEST: usize = 8 * 1024;
/// How long a client may take to send its request head.
pub const READ_DEADLINE: Duration = Duration::from_secs(5);
/// How long writing the answer may take.
const WRITE_DEADLINE: Duration = Duration::from_secs(10);
/// Scrapers are few: a handful of Prometheus servers and an operator's curl.
const METRICS_LIMITS: Limits = Limits { per_address: 8, total: 64 };

/// Serve the metrics if clconf.xml asks for them, for as long as cldaemon runs. A port that
/// cannot be bound is logged, not fatal: the cluster runs without its metrics.
pub async fn run(ctx: Context, status: watch::Receiver<ClusterStatus>) {
    let Some(metrics) = ctx.cluster().metrics else { return };
    let listener = match TcpListener::bind(metrics.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            error!("cannot serve metrics on {}: {e}; running without them", metrics.listen);
            return;
        }
    };
    info!(address = %metrics.listen, "serving Prometheus metrics on http://{}/metrics", metrics.listen);
    let history = Arc::new(Mutex::new(History::default()));
    tokio::spawn(follow(status.clone(), history.clone()));
    serve(listener, metrics.listen, status, history).await;
}

/// Feed every published snapshot to `history`.
async fn follow(mut status: watch::Receiver<ClusterStatus>, history: Arc<Mutex<History>>) {
    let origin = Instant::now();
    loop {
        {
            let snapshot = status.borrow_and_update();
            if let Ok(mut h) = history.lock() {
                h.observe(&snapshot, origin.elapsed());
            }
        }
        if status.changed().await.is_err() {
            return;
        }
    }
}

/// Answer scrapes on `listener` (bounded like every listener of cldaemon, shown in clstat).
pub async fn serve(
    listener: TcpListener,
    address: SocketAddr,
    status: watch::Receiver<ClusterStatus>,
    history: Arc<Mutex<History>>,
) {
    let stats = crate::serve::Listener::register(
        cl_wire::Daemon::Cldaemon,
        format!("metrics {address}"),
        METRICS_LIMITS,
    );
    crate::serve::serve(listener, stats, move |stream, _peer, conn| {
        let status = status.clone();
        let history = history.clone();
        async move { answer(stream, conn, status, history).await }
    })
    .await;
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// `GET /metrics` (`head`: HEAD, the same without a body).
    Metrics {
        /// No body wanted.
        head: bool,
    },
    /// Another path: 404.
    NotFound,
    /// Another method: 405.
    MethodNotAllowed,
    /// Not an HTTP/1.x request line: 400.
    BadRequest,
}

/// Read the request line of `head` (the bytes up to the blank line).
pub fn parse_request(head: &[u8]) -> Request {
    let Ok(text) = std::str::from_utf8(head) else { return Request::BadRequest };
    let line = text.split("\r\n").next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Request::BadRequest;
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return Request::BadRequest;
    }
    // Prometheus adds no query, but a scraper may; the path alone decides.
    let path = target.split('?').next().unwrap_or_default();
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => Request::Metrics { head: method == "HEAD" },
        ("GET" | "HEAD", _) => Request::NotFound,
        _ => Request::MethodNotAllowed,
    }
}

/// Why no request head was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeadError {
    /// The client closed the connection (or it failed) before the blank line.
    Closed,
    /// More than [`MAX_REQUEST`] bytes without the blank line.
    TooLong,
}

/// Read one request head: the bytes before the blank line, at most [`MAX_REQUEST`].
async fn read_head(stream: &mut TcpStream) -> Result<Vec<u8>, HeadError> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await.map_err(|_| HeadError::Closed)?;
        if n == 0 {
            return Err(HeadError::Closed);
        }
        head.extend_from_slice(buf.get(..n).ok_or(HeadError::Closed)?);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            head.truncate(end);
            return Ok(head);
        }
        if head.len() > MAX_REQUEST {
            return Err(HeadError::TooLong);
        }
    }
}

/// Answer one connection: one request, then close (`Connection: close`).
async fn answer(
    mut stream: TcpStream,
    conn: Conn,
    status: watch::Receiver<ClusterStatus>,
    history: Arc<Mutex<History>>,
) {
    let head =
        crate::serve::within(&conn, READ_DEADLINE, "an HTTP request", read_head(&mut stream));
    let request = match head.await {
        Some(Ok(head)) => parse_request(&head),
        Some(Err(HeadError::TooLong)) => {
            let detail = format!("an HTTP request head longer than {MAX_REQUEST} bytes");
            conn.rejected("bad http request", &detail);
            return;
        }
        // A health check that only connects, or a client gone: nothing to answer.
        Some(Err(HeadError::Closed)) | None => return,
    };
    let response = match request {
        Request::Metrics { head } => {
            let snapshot = status.borrow().clone();
            let body = match history.lock() {
                Ok(h) => render(&snapshot, &h),
                Err(_) => String::new(),
            };
            response("200 OK", CONTENT_TYPE, &body, head)
        }
        Request::NotFound => {
            response("404 Not Found", "text/plain", "only /metrics is here\n", false)
        }
        Request::MethodNotAllowed => {
            response("405 Method Not Allowed", "text/plain", "only GET is answered\n", false)
        }
        Request::BadRequest => {
            conn.rejected("bad http request", "not an HTTP/1 request line");
            response("400 Bad Request", "text/plain", "not an HTTP/1 request\n", false)
        }
    };
    let write = async {
        stream.write_all(&response).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(WRITE_DEADLINE, write).await;
}

/// An HTTP/1.1 response that closes the connection.
pub fn response(status: &str, content_type: &str, body: &str, head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status.starts_with("405") {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !head_only {
        bytes.extend_from_slice(body.as_bytes());
    }
    bytes
}
