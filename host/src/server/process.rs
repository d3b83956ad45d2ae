//! Process settings the server needs before it serves: the open-file limit
//! and the allocator's trimming.

/// Descriptors kept free for the database, Redis, plugins and files.
const FD_RESERVE: u64 = 256;

/// Raises the soft open-file limit to the hard one and returns the limit.
pub fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        lim.rlim_cur
    }
}

/// Keeps freed heap memory in the process instead of returning it to the
/// kernel after every large free (glibc's default trims above 128 KiB).
/// A replay page (a few MB of rows, decoded on SQLite's thread and freed on a
/// runtime thread) otherwise costs fresh, zeroed pages from the kernel every
/// time: with this, replay runs about a fifth faster. Call before any thread
/// starts.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before threads start.
    unsafe {
        // Setting any of these turns off glibc's own raising of the mmap
        // threshold, so it is raised here too: otherwise every allocation
        // above 128 KiB (a compiled plugin's, a replay page's) would be a
        // fresh mmap.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
        libc::mallopt(libc::M_TOP_PAD, 16 << 20);
    }
}

/// The connection cap for an open-file limit: the limit less a reserve.
pub fn default_max_connections(fd_limit: u64) -> usize {
    fd_limit.saturating_sub(FD_RESERVE).max(16) as usize
}
