//! What the fuzz targets (`fuzz/`) call: the code that reads untrusted input,
//! reached without a server, a store or a runtime. Built only with the
//! `fuzzing` feature; not an API (its shape follows the targets).

use axum::body::Body;
use axum::http::Request;

pub use crate::config::HeadLimits;
pub use crate::error::ApiError;
pub use crate::http::extract::QueryPairs;

/// A connection's first request head (`server::first_request`).
pub mod first_request {
    use super::*;
    use crate::server::first_request::{self as inner, Parsed, TooLarge};

    /// How an HTTP/2 connection with prior knowledge opens.
    pub const H2_PREFACE: &[u8] = inner::H2_PREFACE;

    /// What the parser made of the bytes read so far.
    #[derive(Debug)]
    pub enum Head {
        /// The head is not complete yet.
        Partial,
        /// A plain `GET` of an event stream, for the router.
        Stream(Box<Request<Body>>),
        /// Anything else: hyper serves the connection.
        Other,
        /// Over the byte limit: a 431.
        TooManyBytes,
        /// Over the header-line limit: a 431.
        TooManyLines,
    }

    /// Parses `buf` as the accept loop does after each read.
    pub fn parse(buf: &[u8], limits: &HeadLimits) -> Head {
        match inner::parse_stream_request(buf, limits) {
            Parsed::Partial => Head::Partial,
            Parsed::Stream(req) => Head::Stream(req),
            Parsed::Other => Head::Other,
            Parsed::TooLarge(TooLarge::Bytes) => Head::TooManyBytes,
            Parsed::TooLarge(TooLarge::Lines) => Head::TooManyLines,
        }
    }

    /// Whether `path` (with its query) is a route that answers with a stream.
    pub fn is_stream_path(path: &str) -> bool {
        inner::is_stream_path(path)
    }
}

/// SSE frames (`sse::encode`).
pub mod sse {
    pub use crate::sse::encode::{
        event, event_line, frame_len, heartbeat_body, id_line, opening, put_event, put_unnamed,
    };
}

/// A stream request's cursor and subscription shape (`http::streams`).
pub mod streams {
    use super::*;

    /// Query parameters the host reads itself.
    pub const HOST_PARAMS: &[&str] = &crate::http::streams::HOST_PARAMS;
    /// Most subscription parameters a stream may have.
    pub const MAX_SHAPE_PARAMS: usize = crate::http::streams::MAX_SHAPE_PARAMS;

    /// `Last-Event-ID` (or `lastEventId`) as a cursor.
    pub fn last_event_id(v: Option<&str>) -> Result<Option<u64>, ApiError> {
        crate::http::streams::parse_last_event_id(v)
    }

    /// The subscription parameters a plugin filter sees.
    pub fn subscription_shape(q: &QueryPairs) -> Result<Vec<(String, String)>, ApiError> {
        crate::http::streams::shape_params(q)
    }
}

/// Host types, WIT types and JSON (`plugins::convert`).
pub mod convert {
    pub use crate::bids::decision::Verdict;
    pub use crate::bids::{Bid, BidStatus, Product, ProductStatus};
    pub use crate::plugins::convert::*;
    pub use crate::plugins::wasm::bindings::types;
    pub use crate::plugins::wasm::GuestFailure;
    pub use crate::plugins::{Access, FilterOutcome};
    pub use crate::store::Notification;
}
