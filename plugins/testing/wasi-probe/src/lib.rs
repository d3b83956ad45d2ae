//! An event filter that reads what a language runtime reads while it starts
//! (the clocks, random bytes, the environment, arguments, stdin) and tries
//! what a plugin must not do (open a file, a socket), then replaces the
//! event's data with what it saw. The host's sandbox tests check that the
//! same input gives the same answer and that the refusals are errors the
//! guest sees, not traps.

use std::io::{Read, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use switchyard_plugin::serde_json::json;
use switchyard_plugin::{Event, EventFilter, FilterResult};

/// The probe.
pub struct Probe;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl EventFilter for Probe {
    fn filter(event: Event, _subscription: Vec<(String, String)>) -> FilterResult {
        let wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(-1);
        let mono_a = std::time::Instant::now();
        let mono_b = std::time::Instant::now();
        let mut random = [0u8; 16];
        let random = match getrandom::fill(&mut random) {
            Ok(()) => hex(&random),
            Err(e) => format!("error: {e}"),
        };
        let mut stdin = Vec::new();
        let stdin_read = std::io::stdin()
            .read_to_end(&mut stdin)
            .map(|_| stdin.len());
        println!("probe saw event {}", event.id);
        let _ = std::io::stdout().flush();
        eprintln!("probe stderr line");
        let file = std::fs::read("/etc/hostname").map(|b| b.len());
        let tcp = std::net::TcpStream::connect("127.0.0.1:6379").map(|_| ());
        let data = json!({
            "wall_ms": wall_ms,
            "mono_elapsed_ns": mono_b.duration_since(mono_a).as_nanos() as u64,
            "random": random,
            "env": std::env::vars().count(),
            "args": std::env::args().count(),
            "stdin": stdin_read.map_err(|e| e.to_string()),
            "file": file.map_err(|e| e.to_string()),
            "tcp": tcp.map_err(|e| e.to_string()),
        });
        FilterResult::Replace(data.to_string())
    }
}

switchyard_plugin::export_event_filter!(Probe);
