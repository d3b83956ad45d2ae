//! Builds the example plugins in `plugins/` for `wasm32-wasip2`, so the
//! binary carries them (`switchyard serve` with no configuration runs with
//! them active). They form their own cargo workspace, built into
//! `target/plugins` by a nested cargo.

use std::path::PathBuf;
use std::process::Command;

const PLUGINS: [&str; 3] = ["bid_validator", "notification_shaper", "event_filter"];

fn main() {
    require_wasm_target();
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir
        .parent()
        .expect("host/ sits in the workspace")
        .to_path_buf();
    let plugins = root.join("plugins");
    println!(
        "cargo:rerun-if-changed={}",
        plugins.join("Cargo.toml").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        plugins.join("Cargo.lock").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        plugins.join("switchyard-plugin").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        plugins.join("examples").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        plugins.join("testing").display()
    );
    println!("cargo:rerun-if-changed={}", root.join("wit").display());

    // Next to the host's own target dir, wherever that is.
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("plugins");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--release",
        "--target",
        "wasm32-wasip2",
        "--manifest-path",
    ])
    .arg(plugins.join("Cargo.toml"))
    .env("CARGO_TARGET_DIR", &target_dir);
    // What cargo sets for this build script must not leak into the nested
    // build (other flags, clippy's wrapper, the host's target).
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_PRIMARY_PACKAGE",
        "TARGET",
        "HOST",
        "OPT_LEVEL",
        "DEBUG",
        "PROFILE",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo for the example plugins: {e}"));
    if !status.success() {
        panic!(
            "building the example plugins in plugins/ failed (see above). \
             They need the wasm32-wasip2 target: `rustup target add wasm32-wasip2`."
        );
    }
    // Tests load the other components of the plugins workspace from here
    // (the misbehaving ones under plugins/testing).
    let artifacts = target_dir.join("wasm32-wasip2/release");
    println!(
        "cargo:rustc-env=SWITCHYARD_PLUGIN_ARTIFACTS={}",
        artifacts.display()
    );
    for name in PLUGINS {
        let built = target_dir
            .join("wasm32-wasip2/release")
            .join(format!("{name}.wasm"));
        std::fs::copy(&built, out_dir.join(format!("{name}.wasm")))
            .unwrap_or_else(|e| panic!("cannot copy {}: {e}", built.display()));
    }
}

/// Fails at once, with the command to run, when the toolchain lacks the
/// wasm32-wasip2 standard library (a fresh rustup install has only the host's):
/// otherwise the nested build fails minutes later with "can't find crate for
/// `core`". `scripts/setup` adds the target.
fn require_wasm_target() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    if let Some(sysroot) = sysroot {
        if !sysroot.join("lib/rustlib/wasm32-wasip2/lib").is_dir() {
            panic!(
                "the wasm32-wasip2 target is not installed (the example plugins are built for it): \
                 run `bash scripts/setup` or `rustup target add wasm32-wasip2`"
            );
        }
    }
}
