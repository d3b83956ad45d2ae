//! `Proxy`: a TCP proxy inside the test process, between nodes and a real
//! Redis or Postgres, that can be cut (a partition) and mended.
//!
//! Cut, it is a black hole, which is what a partition looks like to a node:
//! connections stay open and nothing is closed, bytes sent either way are
//! held (read at most one buffer per direction, then not written on), and
//! new connections are accepted (the kernel does that anyway) but not
//! connected onwards. Mended, it delivers what it held and forwards again;
//! a connection's close is held too, and passed on after.
//!
//! `TinyFs`: a small tmpfs for the tests about full disks.

use super::*;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A TCP proxy to `upstream` that can be cut and mended.
pub struct Proxy {
    /// Where nodes connect.
    pub addr: std::net::SocketAddr,
    upstream: String,
    forwarding: watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Starts one forwarding to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
        let addr = listener.local_addr().expect("proxy addr");
        let (forwarding, _) = watch::channel(true);
        let rx = forwarding.subscribe();
        let target = upstream.to_string();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(pipe(client, target.clone(), rx.clone()));
            }
        });
        Proxy {
            addr,
            upstream: upstream.to_string(),
            forwarding,
            accept,
        }
    }

    /// A proxy for the server of `url` (`scheme://[user@]host:port/...`)
    /// and `url` pointing at the proxy instead.
    pub async fn for_url(url: &str) -> (Proxy, String) {
        let (scheme, rest) = url.split_once("://").expect("a URL");
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let authority = &rest[..end];
        let (user, host) = match authority.rsplit_once('@') {
            Some((u, h)) => (format!("{u}@"), h),
            None => (String::new(), authority),
        };
        let proxy = Proxy::start(host).await;
        let url = format!("{scheme}://{user}{}{}", proxy.addr, &rest[end..]);
        (proxy, url)
    }

    /// Stops forwarding: a black hole (see the module doc).
    pub fn cut(&self) {
        self.forwarding.send_replace(false);
    }

    /// Forwards again, held bytes first.
    pub fn mend(&self) {
        self.forwarding.send_replace(true);
    }

    /// The server behind it.
    pub fn upstream(&self) -> &str {
        &self.upstream
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Waits while the proxy is cut.
async fn open(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|on| *on).await;
}

async fn pipe(client: TcpStream, upstream: String, mut rx: watch::Receiver<bool>) {
    // A connection made while cut is not connected onwards until mended.
    open(&mut rx).await;
    let Ok(server) = TcpStream::connect(&upstream).await else {
        return; // dropping the client closes it, as a refused connect would
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = tokio::spawn(copy(cr, sw, rx.clone()));
    let down = tokio::spawn(copy(sr, cw, rx));
    let _ = tokio::join!(up, down);
}

async fn copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut rx: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = from.read(&mut buf).await.unwrap_or(0);
        // Held while cut: data and the close alike.
        open(&mut rx).await;
        if n == 0 {
            let _ = to.shutdown().await;
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Env {
    /// Sends the nodes' Redis traffic through a proxy (started here).
    pub async fn redis_proxy(&mut self) -> Proxy {
        let url = self.redis_url.clone().expect("cluster mode");
        let (proxy, url) = Proxy::for_url(&url).await;
        self.redis_url = Some(url);
        proxy
    }

    /// Sends the nodes' Postgres traffic through a proxy (started here);
    /// the schema is still this env's.
    pub async fn postgres_proxy(&mut self) -> Proxy {
        let url = self.database_url.clone().expect("cluster mode");
        let (proxy, url) = Proxy::for_url(&url).await;
        self.database_url = Some(url);
        proxy
    }
}

/// A small tmpfs mounted on a fresh directory, unmounted when dropped (also
/// when the test fails).
pub struct TinyFs {
    /// The mount point.
    pub dir: PathBuf,
}

impl TinyFs {
    /// Mounts a tmpfs of `size` (`mount`'s syntax: `2m`, `256k`); `None`,
    /// with the reason on stderr, where this process may not mount.
    pub fn mount(size: &str) -> Option<TinyFs> {
        let dir = std::env::temp_dir().join(format!("switchyard-tinyfs-{}", rand_id()));
        std::fs::create_dir_all(&dir).expect("mount point");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(TinyFs { dir }),
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                    Err(e) => e.to_string(),
                };
                eprintln!("SKIPPED: cannot mount a tmpfs (the full-disk tests need root): {why}");
                let _ = std::fs::remove_dir(&dir);
                None
            }
        }
    }

    /// Fills what space is left with a file of its own (`filler`).
    pub fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("filler"))
            .expect("filler");
        let chunk = vec![0u8; 4096];
        // Then byte by byte, so not even a short write fits.
        while f.write_all(&chunk).is_ok() {}
        while f.write_all(&[0]).is_ok() {}
        let _ = f.flush();
    }

    /// Frees the space the filler took.
    pub fn free(&self) {
        let _ = std::fs::remove_file(self.dir.join("filler"));
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        // Lazily: a node of the test may still hold files open on it.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
