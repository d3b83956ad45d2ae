//! The generated component-model bindings, one module per world.
//!
//! `bid_validator` owns the shared `host` and `types` interfaces (with
//! `generate_unused_types`, so every record of `types` is there); the other
//! worlds map both interfaces onto it, so a `Bid` or a `Level` is the same
//! Rust type whichever world names it.
//!
//! With `pub_export_macro`, the custom section a library emits only describes
//! the world's imports; the section naming the world's export is emitted by the
//! export macro in the crate that invokes it. So a plugin is a component of
//! exactly the world it exports, although this crate knows all four.

#![allow(missing_docs, clippy::all)]

/// The `bid-validator` world, and the shared `host` and `types` interfaces.
pub mod bid_validator {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "switchyard:plugins/bid-validator@0.1.0",
        generate_unused_types: true,
        additional_derives: [PartialEq, Eq],
        runtime_path: "::switchyard_plugin::__private::wit_bindgen::rt",
        export_macro_name: "export",
        pub_export_macro: true,
        default_bindings_module: "::switchyard_plugin::bindings::bid_validator",
    });
}

/// The `notification-shaper` world.
pub mod notification_shaper {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "switchyard:plugins/notification-shaper@0.1.0",
        with: {
            "switchyard:plugins/host@0.1.0": crate::bindings::bid_validator::switchyard::plugins::host,
            "switchyard:plugins/types@0.1.0": crate::bindings::bid_validator::switchyard::plugins::types,
        },
        runtime_path: "::switchyard_plugin::__private::wit_bindgen::rt",
        export_macro_name: "export",
        pub_export_macro: true,
        default_bindings_module: "::switchyard_plugin::bindings::notification_shaper",
    });
}

/// The `event-filter` world.
pub mod event_filter {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "switchyard:plugins/event-filter@0.1.0",
        with: {
            "switchyard:plugins/host@0.1.0": crate::bindings::bid_validator::switchyard::plugins::host,
            "switchyard:plugins/types@0.1.0": crate::bindings::bid_validator::switchyard::plugins::types,
        },
        runtime_path: "::switchyard_plugin::__private::wit_bindgen::rt",
        export_macro_name: "export",
        pub_export_macro: true,
        default_bindings_module: "::switchyard_plugin::bindings::event_filter",
    });
}

/// The `stream-authorizer` world.
pub mod stream_authorizer {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "switchyard:plugins/stream-authorizer@0.1.0",
        with: {
            "switchyard:plugins/host@0.1.0": crate::bindings::bid_validator::switchyard::plugins::host,
            "switchyard:plugins/types@0.1.0": crate::bindings::bid_validator::switchyard::plugins::types,
        },
        runtime_path: "::switchyard_plugin::__private::wit_bindgen::rt",
        export_macro_name: "export",
        pub_export_macro: true,
        default_bindings_module: "::switchyard_plugin::bindings::stream_authorizer",
    });
}
