//! Server-Sent Events: frame encoding and the per-connection session.

pub mod caps;
pub mod encode;
pub mod session;
pub mod writer;
