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
