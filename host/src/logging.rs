//! Where `tracing` events go: standard error, through a thread of its own.
//!
//! A log is never allowed to stop or stall the node. The usual failures of
//! a log's destination: the disk under a redirected standard error fills
//! up (`ENOSPC`), the collector reading a pipe goes away (`EPIPE`; Rust
//! ignores `SIGPIPE`, so the write fails rather than the process dying), or
//! the collector stops reading and the pipe fills (the write blocks). So:
//!
//! - events are formatted on the caller's thread and handed to a writer
//!   thread (`tracing_appender::non_blocking`) over a bounded queue, lossy:
//!   when the queue is full the line is dropped, and a request never waits
//!   on the log;
//! - the writer thread swallows write errors ([`Swallow`]): the formatting
//!   layer would otherwise report them with `eprintln!`, which panics when
//!   standard error itself is what fails (a request's task ended with no
//!   response);
//! - every line dropped either way is counted
//!   (`switchyard_log_lines_dropped_total`, [`crate::metrics::LOG_LINES_DROPPED`]).

use std::io::{self, Write};
use std::sync::atomic::{AtomicUsize, Ordering};

use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::metrics::LOG_LINES_DROPPED;

/// Lines the writer thread may hold before new ones are dropped.
const QUEUE_LINES: usize = 16_384;

/// Keeps the writer thread; dropping it writes what is queued (waiting at
/// most a second) and stops the thread. Hold it for the life of the process.
#[must_use = "logs stop when the guard is dropped"]
pub struct LogGuard(#[allow(dead_code)] WorkerGuard);

/// Installs the global subscriber: `RUST_LOG` (default
/// `info,sqlx=warn,hyper=warn`), text or JSON lines, on standard error.
pub fn init(json: bool) -> LogGuard {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,hyper=warn"));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUE_LINES)
        .thread_name("switchyard-log")
        .finish(Swallow(io::stderr()));
    let writer = Counted {
        dropped: writer.error_counter(),
        inner: writer,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        // Writes cannot fail (see the module doc); were one to, it must not
        // be reported on the standard error that just failed.
        .log_internal_errors(false);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    LogGuard(guard)
}

/// A destination whose write errors are counted and dropped rather than
/// returned: the writer thread has nowhere to report them, and a log line
/// is not worth more than the node.
struct Swallow<W>(W);

impl<W: Write> Write for Swallow<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.0.write(buf) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(_) => {
                LOG_LINES_DROPPED.inc();
                Ok(buf.len())
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = self.0.flush();
        Ok(())
    }
}

/// The lossy queue's writer, adding the lines it dropped (its queue was
/// full) to the metric as they happen.
#[derive(Clone)]
struct Counted {
    inner: NonBlocking,
    dropped: ErrorCounter,
}

/// The queue's drops already added to the metric.
static COUNTED: AtomicUsize = AtomicUsize::new(0);

impl Counted {
    fn count(&self) {
        let now = self.dropped.dropped_lines();
        let before = COUNTED.fetch_max(now, Ordering::Relaxed);
        if now > before {
            LOG_LINES_DROPPED.add((now - before) as u64);
        }
    }
}

impl Write for Counted {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf);
        self.count();
        n
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<'a> MakeWriter<'a> for Counted {
    type Writer = Counted;

    fn make_writer(&'a self) -> Counted {
        self.clone()
    }
}

/// Writes one line to standard output, ignoring failure (a full disk, a
/// closed pipe): for the line a serving node prints for scripts, which must
/// not stop it.
pub fn stdout_line(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A destination that always fails.
    struct Full;

    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from_raw_os_error(libc::ENOSPC))
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::Error::from_raw_os_error(libc::ENOSPC))
        }
    }

    #[test]
    fn failed_writes_are_counted_not_returned() {
        let before = LOG_LINES_DROPPED.get();
        let mut w = Swallow(Full);
        assert_eq!(w.write(b"a line\n").expect("swallowed"), 7);
        w.write_all(b"another\n").expect("swallowed");
        w.flush().expect("swallowed");
        assert!(LOG_LINES_DROPPED.get() >= before + 2);
    }
}
