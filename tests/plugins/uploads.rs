//! Uploads compile off the serving path; broken or wrong-world uploads are
//! refused and the old version stays.

use super::*;

/// An upload is answered at once while its component compiles off the
/// serving path (`202`, `compiling`), the old version serving meanwhile; it
/// then becomes active. A component that fails to compile is refused with
/// the reason in `GET /admin/plugins`. A restart loads the stored version
/// from the compiled-code cache instead of compiling it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_compile_off_the_serving_path_and_a_restart_reuses_the_code() {
    let env = Env::new(Mode::Embedded).await;
    let mut node = env.start().await;
    let tenant = node.tenant().await;
    let bytes = variant(&component("event_filter"), 4242);
    let hash = sha(&bytes);
    let r = node
        .http
        .put(format!(
            "{}/admin/plugins/event-filter?tenant={tenant}",
            node.url
        ))
        .bearer_auth(ADMIN)
        .body(bytes.clone())
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let answer: Value = r.json().await.expect("json");
    assert_eq!(answer["state"], "compiling", "{answer}");
    assert_eq!(answer["version"], hash.as_str(), "{answer}");
    assert_eq!(node.get("/health").await.status(), StatusCode::OK);
    wait_for("the upload to become active", secs(20), || async {
        active_hash(&node, "event-filter", Some(&tenant))
            .await
            .as_deref()
            == Some(hash.as_str())
    })
    .await;
    let info = slot_info(&node, "event-filter", Some(&tenant)).await;
    assert!(info["compiling"].is_null(), "{info}");
    assert!(node.metric("switchyard_plugin_compiles_total").await >= 1.0);

    // A component whose body does not compile: refused, the active one stays.
    let mut broken = bytes.clone();
    broken.truncate(bytes.len() / 2);
    let r = node
        .http
        .put(format!(
            "{}/admin/plugins/event-filter?tenant={tenant}",
            node.url
        ))
        .bearer_auth(ADMIN)
        .body(broken.clone())
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    wait_for("the broken upload to be refused", secs(20), || async {
        slot_info(&node, "event-filter", Some(&tenant)).await["last_error"]["hash"]
            == sha(&broken).as_str()
    })
    .await;
    let info = slot_info(&node, "event-filter", Some(&tenant)).await;
    assert!(
        info["last_error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("compile"),
        "{info}"
    );
    assert_eq!(
        active_hash(&node, "event-filter", Some(&tenant))
            .await
            .as_deref(),
        Some(hash.as_str())
    );

    // Restart on the same data: nothing is compiled again.
    node.kill().await;
    let node = env.start().await;
    wait_for(
        "the stored version to be active again",
        secs(20),
        || async {
            active_hash(&node, "event-filter", Some(&tenant))
                .await
                .as_deref()
                == Some(hash.as_str())
        },
    )
    .await;
    assert_eq!(node.metric("switchyard_plugin_compiles_total").await, 0.0);
    assert!(node.metric("switchyard_plugin_cache_hits_total").await >= 1.0);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_or_wrong_world_uploads_are_refused_and_the_old_version_stays() {
    let env = Env::new(Mode::Embedded).await;
    let node = env.start().await;
    let before = active_hash(&node, "bid-validator", None)
        .await
        .expect("bundled validator");
    for (bytes, says) in [
        (
            component("event_filter"),
            "does not fit the `bid-validator` world",
        ),
        (
            b"random bytes, not a component".to_vec(),
            "not a WebAssembly binary",
        ),
        (
            component("bid_validator")[..1000].to_vec(),
            "does not compile",
        ),
    ] {
        let r = put_plugin(&node, "bid-validator", "", bytes).await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["error"]["code"], "plugin_refused");
        assert!(
            body["error"]["message"]
                .as_str()
                .expect("message")
                .contains(says),
            "{body}"
        );
        let info = slot_info(&node, "bid-validator", None).await;
        assert!(
            info["last_error"]["message"]
                .as_str()
                .expect("last_error")
                .contains(says),
            "{info}"
        );
        assert_eq!(
            active_hash(&node, "bid-validator", None).await.as_deref(),
            Some(before.as_str())
        );
    }
    // A broken file in the plugins dir is refused the same way.
    let dir = env.data_dir.join("plugins.d");
    std::fs::write(dir.join("bid-validator.wasm"), b"garbage").expect("write");
    wait_for("the broken file to be refused", secs(10), || async {
        slot_info(&node, "bid-validator", None).await["last_error"]["origin"]
            .as_str()
            .is_some_and(|o| o.starts_with("file:"))
    })
    .await;
    assert_eq!(
        active_hash(&node, "bid-validator", None).await.as_deref(),
        Some(before.as_str())
    );
    assert!(node
        .log_text()
        .contains("plugin refused; the current version stays active"));
    env.cleanup().await;
}

/// The compiled-code cache is loaded as native code, so only from a place
/// nobody else may write: the node makes its cache dir 0700 and its files
/// 0600, and compiles instead of loading when the dir or the file is
/// writable by group or others (logging why).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_code_cache_is_private_and_a_writable_one_is_not_loaded() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new(Mode::Embedded).await;
    let mut node = env.start().await;
    let tenant = node.tenant().await;
    let bytes = variant(&component("event_filter"), 4343);
    let hash = sha(&bytes);
    let r = put_plugin(&node, "event-filter", &format!("?tenant={tenant}"), bytes).await;
    assert_eq!(r.status(), StatusCode::OK);
    let dir = env.data_dir.join("plugin-cache");
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700, "the cache dir is private");
    let file = std::fs::read_dir(&dir)
        .expect("cache dir")
        .map(|e| e.expect("entry").path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&hash))
        })
        .expect("the component's compiled code is cached");
    assert_eq!(mode(&file), 0o600, "cache files are private");
    let chmod = |p: &std::path::Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod")
    };
    // (restart, then what the node did with the cached code)
    for (dir_mode, file_mode, loaded) in [
        (0o777, 0o600, false),
        (0o700, 0o666, false),
        (0o700, 0o600, true),
    ] {
        node.kill().await;
        chmod(&dir, dir_mode);
        chmod(&file, file_mode);
        node = env.start().await;
        wait_for(
            "the stored version to be active again",
            secs(30),
            || async {
                active_hash(&node, "event-filter", Some(&tenant))
                    .await
                    .as_deref()
                    == Some(hash.as_str())
            },
        )
        .await;
        let hits = node.metric("switchyard_plugin_cache_hits_total").await;
        let compiles = node.metric("switchyard_plugin_compiles_total").await;
        if loaded {
            assert!(
                hits >= 1.0 && compiles == 0.0,
                "dir {dir_mode:o} file {file_mode:o}: {hits} hits, {compiles} compiles"
            );
        } else {
            // (the bundled examples' cached code is refused with the dir,
            // and loaded when only this file is writable)
            assert!(
                compiles >= 1.0,
                "dir {dir_mode:o} file {file_mode:o}: {hits} hits, {compiles} compiles"
            );
            if dir_mode != 0o700 {
                assert_eq!(hits, 0.0, "dir {dir_mode:o}: {compiles} compiles");
            }
            assert!(
                node.log_text().contains("plugin cache not trusted"),
                "the refusal is logged:\n{}",
                node.log_text()
            );
        }
    }
    env.cleanup().await;
}
