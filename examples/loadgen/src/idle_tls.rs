//! `idle-tls`: many idle SSE streams over TLS, to measure what a stream
//! costs the server there: one HTTP/1.1 connection per stream, or with
//! `--h2-streams K`, HTTP/2 with K streams on each connection.
//!
//! Each stream's body is read (and, over HTTP/2, its flow-control window
//! released) as it comes, so heartbeats keep flowing and no stream stalls.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::args::Args;

/// Options `idle-tls` accepts.
pub const IDLE_TLS_OPTS: &[&str] = &[
    "url",
    "path",
    "clients",
    "ca",
    "h2-streams",
    "ramp-per-sec",
    "duration-secs",
    "threads",
];

/// Counters every stream updates.
#[derive(Default)]
struct Shared {
    established: AtomicU64,
    failed: AtomicU64,
    closed: AtomicU64,
}

/// Opens the streams, reports when all are open, then holds them.
pub async fn run(a: &Args) -> Result<(), String> {
    let url = a.required("url")?;
    let authority = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("idle-tls needs an https:// URL, got {url:?}"))?
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let (host, _) = authority
        .rsplit_once(':')
        .ok_or_else(|| format!("--url needs host:port, got {authority:?}"))?;
    let addr = tokio::net::lookup_host(&authority)
        .await
        .map_err(|e| format!("cannot resolve {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("no address for {authority}"))?;
    let name = ServerName::try_from(host.to_string()).map_err(|e| format!("{host}: {e}"))?;
    let path = a.required("path")?;
    let clients: usize = a.num("clients", 1)?;
    let per_conn: usize = a.num("h2-streams", 0)?;
    let ramp: f64 = a.num("ramp-per-sec", 1000.0)?;
    let secs: f64 = a.num("duration-secs", 0.0)?;
    let ca = a.required("ca")?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&ca).map_err(|e| format!("--ca {ca}: {e}"))? {
        roots
            .add(cert.map_err(|e| format!("--ca {ca}: {e}"))?)
            .map_err(|e| format!("--ca {ca}: {e}"))?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![if per_conn > 0 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    let connector = TlsConnector::from(Arc::new(config));
    let shared = Arc::new(Shared::default());
    let t0 = Instant::now();
    let gap = Duration::from_secs_f64(1.0 / ramp.max(1.0));
    let mut opened = 0usize;
    let mut next = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    while opened < clients {
        let n = if per_conn > 0 {
            per_conn.min(clients - opened)
        } else {
            1
        };
        let (connector, name, path, shared) = (
            connector.clone(),
            name.clone(),
            path.to_string(),
            shared.clone(),
        );
        let host = authority.clone();
        tasks.push(tokio::spawn(async move {
            let res = if per_conn > 0 {
                h2_conn(connector, addr, name, &host, &path, n, gap, &shared).await
            } else {
                h1_conn(connector, addr, name, &host, &path, &shared).await
            };
            if let Err(e) = res {
                eprintln!("connection failed: {e}");
                shared.failed.fetch_add(n as u64, Relaxed);
            }
        }));
        opened += n;
        // Over HTTP/2 the connection's task paces its own streams.
        next += gap * n as u32;
        tokio::time::sleep_until(next).await;
    }
    while (shared.established.load(Relaxed) + shared.failed.load(Relaxed)) < clients as u64 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "ramp complete: {} established, {} failed in {:.2}s ({})",
        shared.established.load(Relaxed),
        shared.failed.load(Relaxed),
        t0.elapsed().as_secs_f64(),
        if per_conn > 0 {
            format!("HTTP/2, {per_conn} streams per connection")
        } else {
            "HTTP/1.1 over TLS".into()
        }
    );
    if secs > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    } else {
        std::future::pending::<()>().await;
    }
    println!(
        "done: {} still open, {} closed by the server",
        shared.established.load(Relaxed) - shared.closed.load(Relaxed),
        shared.closed.load(Relaxed)
    );
    Ok(())
}

async fn tls(
    connector: &TlsConnector,
    addr: std::net::SocketAddr,
    name: ServerName<'static>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))
}

/// One stream on its own HTTP/1.1 connection over TLS.
async fn h1_conn(
    connector: TlsConnector,
    addr: std::net::SocketAddr,
    name: ServerName<'static>,
    host: &str,
    path: &str,
    shared: &Shared,
) -> Result<(), String> {
    let mut s = tls(&connector, addr, name).await?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\nUser-Agent: switchyard-loadgen\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = vec![0u8; 2048];
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed before the response head".into());
        }
        head.extend_from_slice(&buf[..n]);
    }
    if !head.starts_with(b"HTTP/1.1 200") {
        return Err(String::from_utf8_lossy(&head[..head.len().min(80)]).into_owned());
    }
    shared.established.fetch_add(1, Relaxed);
    drop(head);
    let mut buf = vec![0u8; 256];
    while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
    shared.closed.fetch_add(1, Relaxed);
    Ok(())
}

/// `n` streams on one HTTP/2 connection over TLS, opened `gap` apart.
#[allow(clippy::too_many_arguments)]
async fn h2_conn(
    connector: TlsConnector,
    addr: std::net::SocketAddr,
    name: ServerName<'static>,
    host: &str,
    path: &str,
    n: usize,
    gap: Duration,
    shared: &Arc<Shared>,
) -> Result<(), String> {
    let s = tls(&connector, addr, name).await?;
    let (send, conn) = h2::client::handshake(s)
        .await
        .map_err(|e| format!("h2 handshake: {e}"))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let uri = format!("https://{host}{path}");
    let mut bodies = Vec::with_capacity(n);
    for _ in 0..n {
        let mut send = send.clone().ready().await.map_err(|e| format!("h2: {e}"))?;
        let req = http::Request::get(&uri)
            .header("accept", "text/event-stream")
            .header("user-agent", "switchyard-loadgen")
            .body(())
            .map_err(|e| e.to_string())?;
        let (res, _) = send
            .send_request(req, true)
            .map_err(|e| format!("h2 request: {e}"))?;
        let shared = shared.clone();
        bodies.push(tokio::spawn(async move {
            let Ok(res) = res.await else {
                shared.failed.fetch_add(1, Relaxed);
                return;
            };
            if res.status() != 200 {
                shared.failed.fetch_add(1, Relaxed);
                return;
            }
            shared.established.fetch_add(1, Relaxed);
            let mut body = res.into_body();
            while let Some(Ok(chunk)) = body.data().await {
                let _ = body.flow_control().release_capacity(chunk.len());
            }
            shared.closed.fetch_add(1, Relaxed);
        }));
        tokio::time::sleep(gap).await;
    }
    for b in bodies {
        let _ = b.await;
    }
    driver.abort();
    Ok(())
}
