//! What a component declares about itself in custom sections, read without
//! compiling it.
//!
//! - `switchyard-shape-params`: the subscription parameters an event filter
//!   reads (comma-separated names), so streams that differ only in others
//!   share one filter call per event (`registry::shapes`). The Rust SDK's
//!   `export_event_filter!(Type, params = [..])` writes it; any tool that
//!   adds a custom section can, for components in other languages. A
//!   `shape_params` key in the slot's configuration overrides it.
//!
//! The section may sit in the component or in any core module inside it
//! (the Rust toolchain leaves it in the core module). Only the first one
//! counts; a section that is not UTF-8 or is over [`MAX_SECTION`] bytes is
//! ignored (the filter then counts every parameter, as with none).

/// The custom section naming an event filter's shape parameters.
pub const SHAPE_PARAMS_SECTION: &str = "switchyard-shape-params";
/// Largest section read.
pub const MAX_SECTION: usize = 4096;

/// What a component declares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    /// The event filter's shape parameters, normalized (trimmed names, no
    /// empty ones, joined by commas), if it declares them.
    pub shape_params: Option<String>,
}

/// Reads the declarations of a component (or core module). Bytes that do
/// not parse declare nothing: compiling them reports the error.
pub fn read(bytes: &[u8]) -> Manifest {
    let mut manifest = Manifest::default();
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let Ok(payload) = payload else { break };
        if let wasmparser::Payload::CustomSection(c) = payload {
            if c.name() == SHAPE_PARAMS_SECTION && manifest.shape_params.is_none() {
                manifest.shape_params = normalize(c.data());
            }
        }
    }
    manifest
}

fn normalize(data: &[u8]) -> Option<String> {
    if data.len() > MAX_SECTION {
        return None;
    }
    let text = std::str::from_utf8(data).ok()?;
    let names: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    Some(names.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A custom section as the binary format writes it: id 0, size, name.
    fn custom(name: &str, data: &[u8]) -> Vec<u8> {
        let mut body = vec![u8::try_from(name.len()).expect("short name")];
        body.extend_from_slice(name.as_bytes());
        body.extend_from_slice(data);
        let mut out = vec![0u8];
        let mut n = body.len();
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
        out.extend(body);
        out
    }

    fn module(sections: &[Vec<u8>]) -> Vec<u8> {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        for s in sections {
            m.extend_from_slice(s);
        }
        m
    }

    #[test]
    fn reads_the_declared_names_normalized() {
        let m = module(&[custom(SHAPE_PARAMS_SECTION, b" min_amount, redact,,")]);
        assert_eq!(read(&m).shape_params.as_deref(), Some("min_amount,redact"));
    }

    #[test]
    fn an_empty_declaration_is_a_declaration_of_none() {
        let m = module(&[custom(SHAPE_PARAMS_SECTION, b"")]);
        assert_eq!(read(&m).shape_params.as_deref(), Some(""));
    }

    #[test]
    fn no_section_bad_text_or_an_oversized_one_declare_nothing() {
        assert_eq!(read(&module(&[custom("other", b"x")])), Manifest::default());
        let bad = module(&[custom(SHAPE_PARAMS_SECTION, &[0xff, 0xfe])]);
        assert_eq!(read(&bad), Manifest::default());
        let big = module(&[custom(SHAPE_PARAMS_SECTION, &vec![b'a'; MAX_SECTION + 1])]);
        assert_eq!(read(&big), Manifest::default());
        assert_eq!(read(b"not wasm"), Manifest::default());
    }

    #[test]
    fn the_bundled_example_filter_declares_what_it_reads() {
        assert_eq!(
            read(crate::plugins::bundled::EVENT_FILTER)
                .shape_params
                .as_deref(),
            Some("min_amount,redact")
        );
        assert_eq!(
            read(crate::plugins::bundled::BID_VALIDATOR),
            Manifest::default()
        );
    }
}
