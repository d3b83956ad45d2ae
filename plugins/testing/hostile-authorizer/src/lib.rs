//! A stream authorizer that misbehaves on demand, by the stream's query
//! parameters: `crash=1` panics, `hang=1` loops forever, `garbage=1`
//! refuses with a code the host does not accept; otherwise it allows.

use switchyard_plugin::{Authorization, StreamAuthorizer, StreamRequest};

/// The hostile authorizer.
pub struct Hostile;

impl StreamAuthorizer for Hostile {
    fn authorize(request: StreamRequest) -> Authorization {
        hostile::misbehave();
        let has = |k: &str| request.params.iter().any(|(n, v)| n == k && v == "1");
        if has("hang") {
            let mut n: u64 = 0;
            loop {
                n = core::hint::black_box(n.wrapping_add(1));
            }
        }
        if has("crash") {
            panic!("hostile authorizer panics on purpose");
        }
        if has("garbage") {
            return Authorization::refuse("Not A Code!", "bad");
        }
        Authorization::Allow
    }
}

switchyard_plugin::export_stream_authorizer!(Hostile);
