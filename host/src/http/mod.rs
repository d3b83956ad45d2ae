//! The HTTP API: `router` wires one file per resource.

pub mod access;
pub mod admin;
pub mod audit;
pub mod console;
pub mod console_ui;
mod deadline;
pub mod doc;
pub mod events;
pub mod extract;
pub mod messages;
pub mod openapi;
pub mod ops;
pub mod plugins;
pub mod products;
pub mod router;
pub mod sources;
pub mod streams;
pub mod topics;
pub mod web;
