//! The plugins directory: `{slot}.wasm` (every tenant) and
//! `{tenant}/{slot}.wasm`, each with an optional `{slot}.json` configuration
//! (a JSON object) beside it. Read at start and watched with `notify`; a
//! change is installed through the registry like an admin upload, so it is
//! compiled and checked first, stored, and reaches every node.
//!
//! Write files atomically (write elsewhere, then rename into place): a file
//! caught half-written is refused like any broken upload, and the next write
//! event installs the whole one.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::registry::{content_hash, Mode, Plugins};
use super::Slot;

/// Events on one file are collected until it has been quiet this long.
const QUIET: Duration = Duration::from_millis(100);

/// What a path in the directory means.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    tenant: String,
    slot: Slot,
    config: bool,
}

fn entry(dir: &Path, path: &Path) -> Option<Entry> {
    let rel = path.strip_prefix(dir).ok()?;
    let parts: Vec<&str> = rel.iter().filter_map(|p| p.to_str()).collect();
    let (tenant, file) = match parts.as_slice() {
        [file] => ("", *file),
        [tenant, file] => {
            crate::event::validate_slug(tenant).ok()?;
            (*tenant, *file)
        }
        _ => return None,
    };
    let (stem, config) = if let Some(s) = file.strip_suffix(".wasm") {
        (s, false)
    } else if let Some(s) = file.strip_suffix(".json") {
        (s, true)
    } else {
        return None;
    };
    Some(Entry {
        tenant: tenant.into(),
        slot: Slot::parse(stem)?,
        config,
    })
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(top) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in top.flatten() {
        let p = e.path();
        if p.is_dir() {
            if let Ok(sub) = std::fs::read_dir(&p) {
                out.extend(sub.flatten().map(|e| e.path()).filter(|p| p.is_file()));
            }
        } else if p.is_file() {
            out.push(p);
        }
    }
    // Configuration first, so a component starts with its configuration.
    out.sort_by_key(|p| (p.extension().is_some_and(|e| e == "wasm"), p.clone()));
    out
}

/// Why a plugin file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// A configuration file that does not read.
    #[error("{0}")]
    Read(#[from] std::io::Error),
    /// A configuration file that is not JSON.
    #[error("not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    /// A configuration file that is not an object.
    #[error("must be a JSON object of keys and values")]
    NotObject,
    /// The directory cannot be made, resolved or watched.
    #[error("cannot {what} the plugins dir{dir}: {reason}")]
    Dir {
        /// create, resolve or watch.
        what: &'static str,
        /// ` {path}`, where known.
        dir: String,
        /// Why.
        reason: String,
    },
}

fn read_config(path: &Path) -> Result<BTreeMap<String, String>, FileError> {
    let text = std::fs::read_to_string(path)?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    let obj = v.as_object().ok_or(FileError::NotObject)?;
    Ok(obj
        .iter()
        .map(|(k, v)| {
            let v = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), v)
        })
        .collect())
}

/// Installs what one file says, if it differs from what is active. At start
/// (`startup`), a component older than a change made since (by the admin API
/// or another node) does not override it.
async fn apply_file(plugins: &Plugins, dir: &Path, path: &Path, startup: bool) {
    let Some(e) = entry(dir, path) else {
        return;
    };
    if !path.is_file() {
        // Removing a file changes nothing: the admin API deactivates.
        return;
    }
    let row = plugins.row(&e.tenant, e.slot);
    if e.config {
        match read_config(path) {
            Ok(config) if config != row.config => {
                if let Err(err) = plugins.configure(&e.tenant, e.slot, config).await {
                    tracing::error!(path = %path.display(), error = %err, "cannot apply plugin configuration");
                }
            }
            Ok(_) => {}
            Err(err) => {
                tracing::error!(path = %path.display(), error = %err, "plugin configuration refused")
            }
        }
        return;
    }
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(err) => {
            tracing::error!(path = %path.display(), error = %err, "cannot read plugin file");
            return;
        }
    };
    if row.active.as_deref() == Some(content_hash(&bytes).as_str()) {
        return;
    }
    if startup && row.origin.as_deref() != Some("bundled") {
        let modified = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as i64);
        if let (Some(m), Some(at)) = (modified, row.active_at) {
            if m < at {
                tracing::info!(path = %path.display(), "plugin file is older than the active version; keeping the active one");
                return;
            }
        }
    }
    let origin = format!("file:{}", path.display());
    match plugins
        .install(&e.tenant, e.slot, bytes, &origin, Mode::Active)
        .await
    {
        Ok(_) => {}
        Err(err) => {
            tracing::error!(path = %path.display(), error = %err, "plugin file not installed")
        }
    }
}

/// The file of `dir` that owns `tenant`'s `slot` (`""`: the default), if
/// there is one: a change to it installs it over whatever was uploaded.
pub fn managed_file(dir: &Path, tenant: &str, slot: Slot) -> Option<PathBuf> {
    let file = format!("{}.wasm", slot.as_str());
    let path = if tenant.is_empty() {
        dir.join(file)
    } else {
        dir.join(tenant).join(file)
    };
    path.is_file().then_some(path)
}

/// Installs what the directory holds (at start).
pub async fn scan(plugins: &Plugins, dir: &Path) {
    for path in files(dir) {
        apply_file(plugins, dir, &path, true).await;
    }
}

/// Watches the directory until `stop`; creates it if missing.
pub fn spawn(plugins: Plugins, dir: PathBuf, stop: CancellationToken) -> Result<(), FileError> {
    let fail = |what, dir: Option<&Path>| {
        let dir = dir.map(|d| format!(" {}", d.display())).unwrap_or_default();
        move |e: &dyn std::fmt::Display| FileError::Dir {
            what,
            dir,
            reason: e.to_string(),
        }
    };
    std::fs::create_dir_all(&dir).map_err(|e| fail("create", Some(dir.as_path()))(&e))?;
    let dir = dir
        .canonicalize()
        .map_err(|e| fail("resolve", Some(dir.as_path()))(&e))?;
    let (tx, mut rx) = mpsc::unbounded_channel::<PathBuf>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            if ev.kind.is_create() || ev.kind.is_modify() {
                for p in ev.paths {
                    let _ = tx.send(p);
                }
            }
        }
    })
    .map_err(|e| fail("watch", None)(&e))?;
    watcher
        .watch(&dir, RecursiveMode::Recursive)
        .map_err(|e| fail("watch", Some(dir.as_path()))(&e))?;
    tracing::info!(dir = %dir.display(), "watching the plugins dir");
    tokio::spawn(async move {
        let _watcher = watcher;
        loop {
            let first = tokio::select! {
                _ = stop.cancelled() => return,
                p = rx.recv() => match p { Some(p) => p, None => return },
            };
            let mut pending = HashSet::from([first]);
            loop {
                match tokio::time::timeout(QUIET, rx.recv()).await {
                    Ok(Some(p)) => {
                        pending.insert(p);
                    }
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            let mut paths: Vec<PathBuf> = pending.into_iter().collect();
            paths.sort_by_key(|p| (p.extension().is_some_and(|e| e == "wasm"), p.clone()));
            for p in paths {
                apply_file(&plugins, &dir, &p, false).await;
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_slots_and_tenants() {
        let d = Path::new("/p");
        assert_eq!(
            entry(d, Path::new("/p/bid-validator.wasm")),
            Some(Entry {
                tenant: "".into(),
                slot: Slot::BidValidator,
                config: false
            })
        );
        assert_eq!(
            entry(d, Path::new("/p/acme/event-filter.json")),
            Some(Entry {
                tenant: "acme".into(),
                slot: Slot::EventFilter,
                config: true
            })
        );
        assert_eq!(entry(d, Path::new("/p/other.wasm")), None);
        assert_eq!(entry(d, Path::new("/p/a/b/bid-validator.wasm")), None);
        assert_eq!(entry(d, Path::new("/p/.bid-validator.wasm.tmp")), None);
    }
}
