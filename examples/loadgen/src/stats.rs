//! Percentiles, clocks, process limits and CPU time.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// Wall-clock microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The `p`th percentile (0..=100) of sorted samples (nearest rank).
pub fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Summary of microsecond samples, in milliseconds.
pub struct Latency {
    /// Number of samples.
    pub count: usize,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest sample.
    pub max: f64,
}

impl Latency {
    /// Sorts `samples` (microseconds) and summarizes them.
    pub fn of(samples: &mut [u32]) -> Latency {
        samples.sort_unstable();
        let ms = |us: u32| f64::from(us) / 1000.0;
        Latency {
            count: samples.len(),
            p50: ms(percentile(samples, 50.0)),
            p90: ms(percentile(samples, 90.0)),
            p99: ms(percentile(samples, 99.0)),
            p999: ms(percentile(samples, 99.9)),
            max: ms(samples.last().copied().unwrap_or(0)),
        }
    }

    /// One line for humans.
    pub fn line(&self) -> String {
        format!(
            "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms ({} samples)",
            self.p50, self.p90, self.p99, self.p999, self.max, self.count
        )
    }

    /// As JSON (milliseconds).
    pub fn json(&self) -> Value {
        json!({
            "samples": self.count,
            "p50_ms": self.p50,
            "p90_ms": self.p90,
            "p99_ms": self.p99,
            "p999_ms": self.p999,
            "max_ms": self.max,
        })
    }
}

/// Raises the soft open-file limit to the hard one; returns the new soft limit.
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
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
    }
    lim.rlim_cur
}

/// CPU seconds (user + system) this process has used so far.
pub fn cpu_secs() -> f64 {
    // SAFETY: an all-zero rusage is a valid value, and getrusage only writes it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// A growable set of small non-negative integers.
#[derive(Default)]
pub struct BitSet {
    words: Vec<u64>,
    len: u64,
}

/// Counters above this are not tracked (a safety bound on memory).
const MAX_TRACKED: u64 = 1 << 26;

impl BitSet {
    /// Inserts `n`; returns `Some(true)` if it was new, `Some(false)` if it
    /// was already there, `None` if `n` is too large to track.
    pub fn insert(&mut self, n: u64) -> Option<bool> {
        if n >= MAX_TRACKED {
            return None;
        }
        let (w, b) = ((n / 64) as usize, n % 64);
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        let fresh = self.words[w] & (1 << b) == 0;
        self.words[w] |= 1 << b;
        if fresh {
            self.len += 1;
        }
        Some(fresh)
    }

    /// How many distinct values were inserted.
    pub fn len(&self) -> u64 {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&v, 0.0), 1);
        assert_eq!(percentile(&[], 50.0), 0);
    }

    #[test]
    fn bitset_counts_distinct() {
        let mut s = BitSet::default();
        assert_eq!(s.insert(3), Some(true));
        assert_eq!(s.insert(3), Some(false));
        assert_eq!(s.insert(700), Some(true));
        assert_eq!(s.len(), 2);
        assert_eq!(s.insert(MAX_TRACKED), None);
    }
}
