//! TLS: the certificate and key (PEM files), ALPN `h2` and `http/1.1`, and
//! reloading the files when they change.
//!
//! The certificate in use sits behind an `ArcSwap` that every handshake
//! reads, so a reload applies to the next handshake and leaves established
//! connections as they are. The files' directories are watched (`notify`);
//! after a change has been quiet for a moment both files are read again. A
//! pair that does not load (a half-written file, a key that does not match
//! the certificate) is logged and the previous certificate stays in use.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use notify::{RecursiveMode, Watcher};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::TlsFiles;

/// Changes are collected until the files have been quiet this long (a
/// rotation writes two files, often in several steps).
const QUIET: Duration = Duration::from_millis(200);
/// Without a file watcher (none available), how often the files' times are
/// compared.
const POLL: Duration = Duration::from_secs(5);

/// Why a certificate and key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no usable PEM of the kind expected.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The key is of a kind rustls cannot sign with, or does not belong to
    /// the certificate.
    #[error("{key} does not fit {cert}: {message}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        message: String,
    },
}

impl TlsFiles {
    /// Reads and checks both files: the chain, the key, and that they belong together.
    pub fn load(&self) -> Result<CertifiedKey, Error> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| Error::Read {
                path: path.to_path_buf(),
                source,
            })
        };
        let pem = |path: &Path, message: String| Error::Pem {
            path: path.to_path_buf(),
            message,
        };
        let cert_pem = read(&self.cert)?;
        let key_pem = read(&self.key)?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem(&self.cert, format!("not a PEM certificate chain ({e})")))?;
        if chain.is_empty() {
            return Err(pem(&self.cert, "no CERTIFICATE in the file".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| pem(&self.key, format!("no PEM private key ({e})")))?;
        let mismatch = |message: String| Error::Mismatch {
            cert: self.cert.clone(),
            key: self.key.clone(),
            message,
        };
        let signer = provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| mismatch(e.to_string()))?;
        let certified = CertifiedKey::new(chain, signer);
        certified
            .keys_match()
            .map_err(|e| mismatch(e.to_string()))?;
        Ok(certified)
    }

    /// The files' modification times, to notice a change without a watcher.
    fn stamps(&self) -> [Option<SystemTime>; 2] {
        let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        [m(&self.cert), m(&self.key)]
    }
}

/// The one crypto provider the server uses (ring).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate every new handshake gets.
#[derive(Debug)]
struct Current(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// Loads the files and returns the acceptor; until `stop`, a change to the
/// files is loaded for later handshakes.
pub fn acceptor(files: &TlsFiles, stop: CancellationToken) -> Result<TlsAcceptor, Error> {
    let current = Arc::new(Current(ArcSwap::from_pointee(files.load()?)));
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(current.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    watch(files.clone(), current, stop);
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Reloads the files after each quiet change (from a watcher, else from
/// polling their modification times).
fn watch(files: TlsFiles, current: Arc<Current>, stop: CancellationToken) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let watcher = {
        let tx = tx.clone();
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if res.is_ok() {
                let _ = tx.send(());
            }
        })
    };
    // The directories are watched, not the files: a rotation that renames a
    // new file into place (or swaps a symlink) replaces the watched inode.
    let mut dirs: Vec<PathBuf> = [&files.cert, &files.key]
        .iter()
        .map(|p| match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        })
        .collect();
    dirs.dedup();
    let watcher = watcher.and_then(|mut w| {
        for d in &dirs {
            w.watch(d, RecursiveMode::NonRecursive)?;
        }
        Ok(w)
    });
    let watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, every_ms = POLL.as_millis() as u64, "cannot watch the TLS files; checking their times instead");
            None
        }
    };
    tokio::spawn(async move {
        // Kept alive for as long as this task runs.
        let _watcher = watcher;
        let polling = _watcher.is_none();
        let mut stamps = files.stamps();
        loop {
            if polling {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(POLL) => {}
                }
                let now = files.stamps();
                if now == stamps {
                    continue;
                }
                stamps = now;
            } else {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    got = rx.recv() => if got.is_none() { return },
                }
                // Wait for the writes to settle.
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(QUIET) => break,
                        _ = rx.recv() => {}
                    }
                }
            }
            reload(&files, &current).await;
        }
    });
    drop(tx);
}

/// Loads the files again; a new certificate replaces the current one, a
/// broken pair is logged and changes nothing.
async fn reload(files: &TlsFiles, current: &Current) {
    let loaded = {
        let files = files.clone();
        tokio::task::spawn_blocking(move || files.load()).await
    };
    match loaded {
        Ok(Ok(new)) => {
            let old = current.0.load();
            if old.cert == new.cert {
                return;
            }
            current.0.store(Arc::new(new));
            tracing::info!(cert = %files.cert.display(), "TLS certificate reloaded; new handshakes use it");
        }
        Ok(Err(e)) => tracing::error!(
            error = %e,
            "TLS certificate not reloaded; the previous certificate stays in use"
        ),
        Err(e) => tracing::error!(error = %e, "TLS certificate reload failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_broken_files_say_which() {
        let dir = std::env::temp_dir().join(format!("switchyard-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let files = TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        let err = files.load().expect_err("no files").to_string();
        assert!(err.contains("cert.pem"), "{err}");
        std::fs::write(&files.cert, "not pem").expect("write");
        std::fs::write(&files.key, "not pem").expect("write");
        let err = files.load().expect_err("not PEM").to_string();
        assert!(err.contains("no CERTIFICATE"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
