//! The author's kit: the examples pass their recorded cases, a failing case
//! prints a diff, `plugin check` names the slot that fits.

use super::*;

#[test]
fn example_plugins_pass_their_recorded_cases() {
    for (name, dir) in [
        ("bid_validator", "bid-validator"),
        ("notification_shaper", "notification-shaper"),
        ("event_filter", "event-filter"),
        ("stream_authorizer", "stream-authorizer"),
    ] {
        let wasm = PathBuf::from(env!("SWITCHYARD_PLUGIN_ARTIFACTS")).join(format!("{name}.wasm"));
        let out = run_cli(&[
            "plugin",
            "test",
            wasm.to_str().expect("utf-8"),
            cases(dir).to_str().expect("utf-8"),
        ]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains(" 0 failed"), "{text}");
    }
}

/// A second `plugin test` of the same component loads its compiled code
/// from the user's cache instead of compiling it again; a cache directory
/// other users may write is not trusted (its code would run in this
/// process), so the component is compiled.
#[test]
fn a_second_plugin_test_loads_the_compiled_code() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("switchyard-cli-cache-{}", support::rand_id()));
    let cache = dir.join("code");
    let wasm = PathBuf::from(env!("SWITCHYARD_PLUGIN_ARTIFACTS")).join("event_filter.wasm");
    let cases = cases("event-filter");
    let run = || {
        let out = run_cli_cached(
            &[
                "plugin",
                "test",
                wasm.to_str().expect("utf-8"),
                cases.to_str().expect("utf-8"),
            ],
            &cache,
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success() && text.contains(" 0 failed"), "{text}");
        text.lines().next().unwrap_or_default().to_string()
    };
    let first = run();
    assert!(first.contains(": compiled in "), "{first}");
    let mode = std::fs::metadata(&cache)
        .expect("the cache dir was made")
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "the cache dir is private: {mode:o}");
    let second = run();
    assert!(
        second.ends_with("compiled code loaded from the cache"),
        "{second}"
    );
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let third = run();
    assert!(
        third.contains(": compiled in "),
        "a cache others may write is not used: {third}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_failing_case_prints_a_diff_and_exits_non_zero() {
    let dir = std::env::temp_dir().join(format!("switchyard-cases-{}", support::rand_id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("cases.json");
    std::fs::write(
        &file,
        json!({
            "slot": "bid-validator",
            "config": { "max_amount": "500" },
            "cases": [
                { "name": "over the maximum", "input": { "bid": { "amount": 900 }, "product": { "starting_price": 100, "min_increment": 10 }, "now": 0 },
                  "expect": { "verdict": "reject", "code": "over_limit" } },
                { "name": "wrongly expected to pass", "input": { "bid": { "amount": 900 }, "product": { "starting_price": 100, "min_increment": 10 }, "now": 0 },
                  "expect": { "verdict": "accept" } }
            ]
        })
        .to_string(),
    )
    .expect("write");
    let wasm = PathBuf::from(env!("SWITCHYARD_PLUGIN_ARTIFACTS")).join("bid_validator.wasm");
    let out = run_cli(&[
        "plugin",
        "test",
        wasm.to_str().expect("utf-8"),
        file.to_str().expect("utf-8"),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("ok    over the maximum"), "{text}");
    assert!(text.contains("FAIL  wrongly expected to pass"), "{text}");
    assert!(text.contains("- .verdict: \"accept\""), "{text}");
    assert!(text.contains("+ .verdict: \"reject\""), "{text}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn plugin_check_says_which_slot_fits_and_why_not() {
    let wasm = PathBuf::from(env!("SWITCHYARD_PLUGIN_ARTIFACTS")).join("event_filter.wasm");
    let out = run_cli(&["plugin", "check", wasm.to_str().expect("utf-8")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("fits event-filter"), "{text}");
    assert!(text.contains("not bid-validator: does not fit"), "{text}");

    let dir = std::env::temp_dir().join(format!("switchyard-check-{}", support::rand_id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let junk = dir.join("junk.wasm");
    std::fs::write(&junk, b"this is not webassembly at all").expect("write");
    let out = run_cli(&["plugin", "check", junk.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a WebAssembly binary"));
    let core = dir.join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").expect("write");
    let out = run_cli(&["plugin", "check", core.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a component"));
    let _ = std::fs::remove_dir_all(dir);
}
