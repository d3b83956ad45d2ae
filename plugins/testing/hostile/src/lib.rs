//! Misbehaviour on demand, for the host's sandbox tests. The configuration
//! key `mode` picks it; anything else behaves.

#![allow(clippy::unwrap_used)]

use switchyard_plugin::config;

/// Does what `mode` says, or returns `None` to let the caller behave.
pub fn misbehave() -> Option<()> {
    match config("mode").as_deref() {
        Some("loop") => {
            let mut n: u64 = 0;
            loop {
                n = core::hint::black_box(n.wrapping_add(1));
            }
        }
        Some("oom") => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(core::hint::black_box(vec![7u8; 1 << 20]));
            }
        }
        Some("panic") => panic!("hostile plugin panics on purpose"),
        Some("sleep") => {
            // A WASI monotonic-clock pollable, blocked on.
            std::thread::sleep(std::time::Duration::from_secs(30));
            None
        }
        Some("naps") => {
            // Short sleeps that add up to far more than any deadline.
            for _ in 0..30_000 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            None
        }
        Some("hoard") => {
            // Host resources (pollables of no duration: no sleep counted)
            // held at once, far past the host's cap.
            let mut held = Vec::new();
            for _ in 0..5_000 {
                held.push(wasip2::clocks::monotonic_clock::subscribe_duration(0));
            }
            core::hint::black_box(&held);
            None
        }
        Some("leak") => {
            // 50 host resources per call, never dropped: an instance kept
            // for the next call would reach the cap within 20 calls.
            for _ in 0..50 {
                std::mem::forget(wasip2::clocks::monotonic_clock::subscribe_duration(0));
            }
            None
        }
        Some("clock") => {
            // A WASI import: the host links it to a trap.
            let t = std::time::SystemTime::now();
            core::hint::black_box(t);
            None
        }
        Some("random") => {
            let m: std::collections::HashMap<u8, u8> = std::collections::HashMap::new();
            core::hint::black_box(m);
            None
        }
        Some("env") => {
            core::hint::black_box(std::env::var("HOME").ok());
            None
        }
        _ => None,
    }
}

/// The configured mode.
pub fn mode() -> String {
    config("mode").unwrap_or_default()
}
