//! Embedded mode: one node, no outside services. SQLite in the data dir is
//! the system of record; fan-out, stream caps and bid wake-ups stay in this
//! process.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{Backend, Error, Mode, Unready};
use crate::bids::queue::{BidWakeups, LocalWakeups};
use crate::bids::worker::Worker;
use crate::bus::hub::Hub;
use crate::bus::memory::MemoryFanout;
use crate::bus::Fanout;
use crate::metrics::Metrics;
use crate::presence::{MemoryPresence, PresenceStore};
use crate::sse::caps::{CapStore, MemoryCaps};
use crate::store::sqlite::SqliteStore;
use crate::store::{self, Store};

/// The tenant embedded mode creates on first start.
pub const DEMO_TENANT: &str = "demo";

/// Opens the SQLite store in `dir`.
pub async fn open(dir: &Path) -> Result<Backend, Error> {
    let store = SqliteStore::open(dir)
        .await
        .map_err(|source| Error::DataDir {
            dir: dir.display().to_string(),
            source,
        })?;
    let store = Arc::new(store);
    Ok(Backend {
        store: store.clone(),
        bids: store.clone(),
        plugins: store.clone(),
        admin: store.clone(),
        mode: Arc::new(Embedded {
            dir: dir.to_path_buf(),
            store,
        }),
        placement: None,
    })
}

/// The secret kept in the data dir (generated on first use; the data dir
/// is created private if missing, as `switchyard token` may be first).
pub fn secret(dir: &Path) -> Result<Vec<u8>, Error> {
    crate::store::sqlite::create_data_dir(dir)
        .and_then(|()| crate::auth::secret_from_data_dir(dir))
        .map_err(|source| Error::SecretFile {
            dir: dir.display().to_string(),
            source,
        })
}

struct Embedded {
    dir: PathBuf,
    store: Arc<SqliteStore>,
}

#[async_trait::async_trait]
impl Mode for Embedded {
    fn name(&self) -> &'static str {
        "embedded"
    }

    async fn on_start(&self, store: &Arc<dyn Store>) -> Result<(), Error> {
        match store.create_tenant(DEMO_TENANT, "Demo marketplace").await {
            Ok(_) => tracing::info!(tenant = DEMO_TENANT, "created the demo tenant"),
            Err(store::Error::Conflict(store::ConflictReason::TenantExists(_))) => {}
            Err(e) => return Err(Error::Start(e)),
        }
        // No stream survives a restart: presence left from the last run is
        // brought back to nobody before any stream opens.
        let states = self.store.presence_states().await.map_err(Error::Start)?;
        let reset = crate::presence::reset_events(&states);
        if !reset.is_empty() {
            tracing::info!(
                events = reset.len(),
                "reset presence left from the last run"
            );
            store.append(reset).await.map_err(Error::Start)?;
        }
        Ok(())
    }

    async fn secret(&self) -> Result<Vec<u8>, Error> {
        // `open` made the data dir.
        crate::auth::secret_from_data_dir(&self.dir).map_err(|source| Error::SecretFile {
            dir: self.dir.display().to_string(),
            source,
        })
    }

    fn fanout(
        &self,
        hub: Hub,
        _metrics: Arc<Metrics>,
        _node: &str,
        _stop: CancellationToken,
    ) -> Arc<dyn Fanout> {
        Arc::new(MemoryFanout::new(hub))
    }

    fn bid_wakeups(
        &self,
        worker: Worker,
        _node: &str,
        _stop: CancellationToken,
    ) -> Arc<dyn BidWakeups> {
        Arc::new(LocalWakeups(worker))
    }

    fn cap_store(&self, _stop: CancellationToken) -> Arc<dyn CapStore> {
        Arc::new(MemoryCaps::default())
    }

    fn presence_store(&self, _stop: CancellationToken) -> Arc<dyn PresenceStore> {
        Arc::new(MemoryPresence::default())
    }

    fn console(
        &self,
        local: Arc<crate::console::LocalStreams>,
        _stop: CancellationToken,
    ) -> Arc<dyn crate::console::Directory> {
        Arc::new(crate::console::MemoryDirectory::new(local))
    }

    fn shares_plugins(&self) -> bool {
        false
    }

    async fn check(&self) -> Vec<(&'static str, Result<(), Unready>)> {
        let sqlite = super::within(async {
            self.store.ping().await?;
            // Reads answer on a full disk; writes do not.
            match free_bytes(&self.dir) {
                Some(free) if free < MIN_FREE => Err(Unready::DiskFull(free)),
                _ => Ok(()),
            }
        })
        .await;
        vec![("sqlite", sqlite)]
    }
}

/// Free space in the data dir below which `/ready` says the disk is full:
/// a write may need more than that (a page of the database, of its
/// write-ahead log, and of each index it touches).
const MIN_FREE: u64 = 64 * 1024;

/// Bytes free for this process in the file system of `dir` (`None`: cannot
/// tell).
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: a valid C string and a buffer of the right type; statvfs only
    // writes into the buffer, and it is read only when the call succeeded.
    let st = unsafe {
        if libc::statvfs(path.as_ptr(), st.as_mut_ptr()) != 0 {
            return None;
        }
        st.assume_init()
    };
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}
