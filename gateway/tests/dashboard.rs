//! The dashboard in a real headless Chromium (Debian `chromium`, driven over the DevTools
//! protocol by `shopfloor_tests::browser`): simulator → agent → embedded broker → gateway
//! (SQLite) → dashboard. Every main page loads without console errors, failed requests or
//! uncaught exceptions; the language switch works; the state timeline and the other charts
//! render with the simulator's data; users sign in with a name and password (users made by the
//! `user add` code path), a wrong password is refused with a message, the session survives a
//! reload and is an HttpOnly cookie the page's script cannot read; a viewer sees no engineer
//! action and the API refuses one anyway (without the CSRF token, and with it for the role);
//! an engineer records economic inputs (a POST with the CSRF token); an auditor downloads a
//! report; signing out ends the session.
//!
//! Screenshots of each main page go to a temporary directory, or to `docs/screenshots/` with
//! `SHOPFLOOR_UPDATE_SCREENSHOTS=1` (how the README's pictures are made).
//!
//! Skipped (with a message) when Chromium is missing, unless `CI=true` or
//! `SHOPFLOOR_TEST_BROWSER=required`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use shopfloor_tests::browser::{Browser, chromium_or_skip};

const WAIT: Duration = Duration::from_secs(60);

fn screenshot_dir() -> (PathBuf, Option<tempfile::TempDir>) {
    if std::env::var("SHOPFLOOR_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        let dir = shopfloor_tests::repo_root().join("docs/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        (dir, None)
    } else {
        let t = tempfile::tempdir().unwrap();
        (t.path().to_owned(), Some(t))
    }
}

/// Page errors so far must be none (console errors, exceptions, failed requests).
fn assert_clean(b: &mut Browser, page: &str) {
    let errors = b.take_errors();
    assert!(errors.is_empty(), "{page}: page errors: {errors:#?}");
}

async fn go(b: &mut Browser, hash: &str, ready: &str) {
    b.eval(&format!("location.hash = {}", serde_json::json!(hash)))
        .await
        .unwrap();
    b.wait_for(ready, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{hash}: {e}"));
    // Charts draw on the next frames.
    b.eval("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        .await
        .unwrap();
}

/// Every user's password in this test.
const PASSWORD: &str = "shopfloor dashboard 1";

/// Creates a dashboard user as `shopfloor-gateway user add --password-stdin` does.
async fn add_user(db: &shopfloor_gateway::db::Db, name: &str, role: &str) {
    shopfloor_gateway::users::run_action(
        db,
        shopfloor_gateway::users::Action::Add {
            name: name.into(),
            role: role.into(),
            password_stdin: true,
        },
        Some(PASSWORD.into()),
        "cli:test",
        now_ms(),
    )
    .await
    .unwrap();
}

async fn sign_in(b: &mut Browser, base: &str, user: &str) {
    b.goto(&format!("{base}/#/login")).await.unwrap();
    b.wait_for("!!document.querySelector('#login-name')", WAIT)
        .await
        .unwrap();
    b.type_into("#login-name", user).await.unwrap();
    b.type_into("#login-password", PASSWORD).await.unwrap();
    b.click("#login-submit").await.unwrap();
    b.wait_for("!!document.querySelector('#user')", WAIT)
        .await
        .unwrap();
}

async fn sign_out(b: &mut Browser) {
    b.click("#logout").await.unwrap();
    b.wait_for("!!document.querySelector('#login-name')", WAIT)
        .await
        .unwrap();
}

/// Number of data items in the first series of the ECharts chart in `#id`.
async fn chart_items(b: &mut Browser, id: &str) -> u64 {
    let v = b
        .eval(&format!(
            "(() => {{ const c = echarts.getInstanceByDom(document.getElementById('{id}'));
                 if (!c) return -1;
                 const s = c.getOption().series[0];
                 return s && s.data ? s.data.length : 0; }})()"
        ))
        .await
        .unwrap();
    v.as_i64().and_then(|x| u64::try_from(x).ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dashboard_in_headless_chromium() {
    if chromium_or_skip("dashboard_in_headless_chromium").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = TestStore::sqlite(dir.path()).await;
    let broker = Broker::Embedded(agent::free_port());
    let prefix = unique("dash");
    let plant = agent::start_plant().await;
    let agent_data = dir.path().join("agent");
    let key = shopfloor_agent::identity::load_or_create(&agent_data).unwrap();
    let public_key = shopfloor_core::batch::public_key_text(&key.verifying_key());
    let registry = write_registry(dir.path(), &public_key);
    let config = write_config(
        dir.path(),
        "gw-dash",
        &store.url,
        &broker,
        &prefix,
        &registry,
    );
    // The plan targets shipped in configs/, so the park page shows traffic lights.
    let targets = shopfloor_tests::repo_root().join("configs/targets.toml");
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "[registry]\n",
        &format!(
            "[registry]\ntargets = {:?}\n",
            targets.display().to_string()
        ),
        1,
    );
    std::fs::write(&config, text).unwrap();
    let gw = start_gateway(&config).await;
    // A token for the test's own API calls; the browser signs in as users.
    let viewer = token(&gw.db, "viewer").await;
    add_user(&gw.db, "wang.viewer", "viewer").await;
    add_user(&gw.db, "li.engineer", "engineer").await;
    add_user(&gw.db, "zhao.auditor", "auditor").await;

    let agent_cfg_path = dir.path().join("agent.toml");
    std::fs::write(
        &agent_cfg_path,
        agent::agent_config(
            &agent_data,
            plant.tcp_addr("gw").unwrap(),
            broker.port(),
            &prefix,
            AGENT,
        ),
    )
    .unwrap();
    let agent_cfg = shopfloor_agent::config::load(&agent_cfg_path).unwrap();
    let (stop_agent, stop_rx) = tokio::sync::watch::channel(false);
    let agent_task = tokio::spawn(shopfloor_agent::run::run(agent_cfg, stop_rx));

    // Wait for the simulator's state intervals to be stored: the timeline needs them.
    let day_ago = rfc3339(now_ms() - 86_400_000);
    wait_until(
        Duration::from_secs(200),
        "state intervals of the CNC",
        || {
            let v = get_json(
                gw.http,
                &format!(
                    "/api/v1/timeline?entity=p1/e1/w1&from={}&to={}",
                    day_ago.replace('+', "%2B"),
                    rfc3339(now_ms() + 60_000).replace('+', "%2B")
                ),
                &viewer,
            );
            v["equipment"][0]["intervals"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
        },
    )
    .await;

    let (shots, _keep) = screenshot_dir();
    let base = format!("http://{}", gw.http);
    let mut b = Browser::launch().await.unwrap();
    b.set_viewport(1440, 900).await.unwrap();

    // Sign-in page, in Chinese by default.
    b.goto(&format!("{base}/")).await.unwrap();
    b.wait_for("!!document.querySelector('#login-name')", WAIT)
        .await
        .unwrap();
    assert_eq!(
        b.eval("document.documentElement.lang").await.unwrap(),
        "zh-CN"
    );
    assert_eq!(
        b.eval("document.querySelector('#login-submit').textContent")
            .await
            .unwrap(),
        "登录"
    );
    b.screenshot(&shots.join("login.png"), false).await.unwrap();
    // A wrong password is refused with a message, and nothing else breaks.
    b.type_into("#login-name", "wang.viewer").await.unwrap();
    b.type_into("#login-password", "not the password")
        .await
        .unwrap();
    b.click("#login-submit").await.unwrap();
    b.wait_for(
        "document.querySelector('#login-msg').textContent === '登录失败: 用户名或密码错误'",
        WAIT,
    )
    .await
    .unwrap();
    assert_eq!(
        b.eval("document.querySelector('#login-password').value")
            .await
            .unwrap(),
        "",
        "the password field is cleared"
    );
    let refused = b.take_errors();
    assert!(
        refused.iter().all(|e| e.contains("401")),
        "only the refused sign-in may fail: {refused:#?}"
    );

    // Viewer: the park page.
    sign_in(&mut b, &base, "wang.viewer").await;
    // The session is an HttpOnly cookie: not readable by the page, in no storage.
    assert_eq!(
        b.eval("document.cookie.includes('sf_session')")
            .await
            .unwrap(),
        false
    );
    let storage = b
        .eval("JSON.stringify(localStorage) + JSON.stringify(sessionStorage)")
        .await
        .unwrap();
    let csrf = b.eval("window.sfApp.csrf").await.unwrap();
    assert!(csrf.as_str().is_some_and(|c| c.len() == 43), "{csrf}");
    assert!(
        !storage.as_str().unwrap().contains(csrf.as_str().unwrap()),
        "the CSRF token stays in memory: {storage}"
    );
    b.wait_for(
        "!!document.querySelector('#enterprises tbody tr[data-entity=\"p1/e1\"]')",
        WAIT,
    )
    .await
    .unwrap();
    b.wait_for("!!document.querySelector('#chart-epva canvas')", WAIT)
        .await
        .unwrap();
    assert_eq!(chart_items(&mut b, "chart-epva").await, 1);
    // The NC rate is compared with the plan target (≥ 65 % from 2025): this enterprise's one
    // key-process machine is a CNC, so the light is green.
    let light = b
        .eval("document.querySelector('tr[data-entity=\"p1/e1\"] td:nth-child(2) .light').dataset.light")
        .await
        .unwrap();
    assert_eq!(light, "green", "NC rate 100 % against its target");
    assert_clean(&mut b, "park");
    b.screenshot(&shots.join("park.png"), true).await.unwrap();

    // Live updates: the event stream is connected.
    b.wait_for(
        "document.querySelector('#live').classList.contains('on')",
        WAIT,
    )
    .await
    .unwrap();

    // Workshop: OEE factors, the state timeline with the simulator's intervals, energy.
    go(
        &mut b,
        "#/entity/p1/e1/w1",
        "!!document.querySelector('#chart-timeline canvas') && !!document.querySelector('#carriers')",
    )
    .await;
    let intervals = chart_items(&mut b, "chart-timeline").await;
    assert!(intervals > 0, "the timeline shows the CNC's states");
    let oee_text = b
        .eval("document.querySelector('.tile[data-indicator=oee] .tile-value').textContent")
        .await
        .unwrap();
    assert_ne!(oee_text, "—", "the workshop's OEE is shown");
    assert!(
        b.eval("document.querySelectorAll('#key-process tbody tr').length")
            .await
            .unwrap()
            .as_u64()
            .unwrap()
            >= 1,
        "the key-process equipment is listed"
    );
    b.wait_for(
        "!!document.querySelector('[data-carrier=electricity]')",
        WAIT,
    )
    .await
    .unwrap();
    assert_clean(&mut b, "workshop");
    b.screenshot(&shots.join("workshop.png"), true)
        .await
        .unwrap();

    // Enterprise, with the green-factory assessment criterion by criterion.
    go(
        &mut b,
        "#/entity/p1/e1",
        "!!document.querySelector('#chart-timeline canvas') && !!document.querySelector('.assessment')",
    )
    .await;
    assert_clean(&mut b, "enterprise");
    b.screenshot(&shots.join("enterprise.png"), true)
        .await
        .unwrap();

    // Equipment: live state, counters, samples, link health.
    go(
        &mut b,
        "#/equipment/p1/e1/w1/l1/cnc-01",
        "!!document.querySelector('#state-now') && document.querySelectorAll('#samples tbody tr').length > 0",
    )
    .await;
    let state = b
        .eval("document.querySelector('#state-now').dataset.state")
        .await
        .unwrap();
    assert_ne!(state, "none", "the CNC has a current state");
    assert_clean(&mut b, "equipment");
    b.screenshot(&shots.join("equipment.png"), true)
        .await
        .unwrap();

    // The language switch: English, then back to Chinese.
    go(
        &mut b,
        "#/entity/p1/e1/w1",
        "!!document.querySelector('#chart-timeline canvas')",
    )
    .await;
    b.eval(
        "(() => { const s = document.getElementById('lang'); s.value = 'en';
                  s.dispatchEvent(new Event('change')); })()",
    )
    .await
    .unwrap();
    b.wait_for(
        "document.documentElement.lang === 'en' && document.querySelector('[data-nav=park]').textContent === 'Park' && [...document.querySelectorAll('h2')].some(h => h.textContent === 'OEE and its factors')",
        WAIT,
    )
    .await
    .unwrap();
    b.wait_for("!!document.querySelector('#chart-timeline canvas')", WAIT)
        .await
        .unwrap();
    assert_clean(&mut b, "workshop (en)");
    b.screenshot(&shots.join("workshop-en.png"), true)
        .await
        .unwrap();
    b.eval(
        "(() => { const s = document.getElementById('lang'); s.value = 'zh-CN';
                  s.dispatchEvent(new Event('change')); })()",
    )
    .await
    .unwrap();
    b.wait_for(
        "document.documentElement.lang === 'zh-CN' && document.querySelector('[data-nav=park]').textContent === '园区'",
        WAIT,
    )
    .await
    .unwrap();

    // A viewer cannot reach engineer actions: no link, the page refuses, the API refuses.
    assert_eq!(
        b.eval("!!document.querySelector('[data-nav=inputs]')")
            .await
            .unwrap(),
        false
    );
    go(&mut b, "#/inputs", "!!document.querySelector('#forbidden')").await;
    assert_clean(&mut b, "inputs (viewer)");
    let refused = b
        .eval(
            "Promise.all([
               fetch('/api/v1/inputs', {method: 'POST', headers: {'Content-Type': 'application/json'},
                 body: '{}'}).then(r => r.json()),
               fetch('/api/v1/inputs', {method: 'POST', headers: {'Content-Type': 'application/json',
                 'X-CSRF-Token': window.sfApp.csrf}, body: '{}'}).then(r => r.json())])
             .then(a => a.map(x => x.error))",
        )
        .await
        .unwrap();
    assert_eq!(
        refused,
        serde_json::json!([
            "csrf: missing x-csrf-token header (a signed-in browser sends the token from POST /api/v1/login or GET /api/v1/session)",
            "role: requires engineer or admin; this user's role is viewer"
        ]),
        "the API refuses the viewer's write"
    );
    let refused = b.take_errors();
    assert!(
        refused.iter().all(|e| e.contains("403")),
        "only the refused writes may fail: {refused:#?}"
    );
    // A reload keeps the session (the cookie), and the page gets its CSRF token again.
    b.goto(&format!("{base}/#/entity/p1/e1/w1")).await.unwrap();
    let js = format!("!!document.querySelector('#user') && window.sfApp.csrf === {csrf}");
    b.wait_for(&js, WAIT).await.unwrap();
    assert_clean(&mut b, "reload");
    sign_out(&mut b).await;
    // Signed out: the old session is gone on the server too.
    let status = b
        .eval("fetch('/api/v1/session').then(r => r.status)")
        .await
        .unwrap();
    assert_eq!(status, 401);
    let refused = b.take_errors();
    assert!(refused.iter().all(|e| e.contains("401")), "{refused:#?}");

    // Engineer: records economic inputs through the form.
    sign_in(&mut b, &base, "li.engineer").await;
    assert_eq!(
        b.eval("!!document.querySelector('[data-nav=inputs]')")
            .await
            .unwrap(),
        true
    );
    go(
        &mut b,
        "#/inputs",
        "!!document.querySelector('#inputs-submit')",
    )
    .await;
    b.type_into("#in-value_added_cny", "1250000").await.unwrap();
    b.type_into("#in-employees_avg", "42").await.unwrap();
    b.click("#inputs-submit").await.unwrap();
    b.wait_for(
        "document.querySelector('#inputs-msg').textContent === '已保存' && document.querySelectorAll('#inputs-history tbody tr').length === 1",
        WAIT,
    )
    .await
    .unwrap();
    assert_eq!(
        b.eval("document.querySelector('#inputs-history tbody td:nth-child(3)').textContent")
            .await
            .unwrap(),
        "user:li.engineer",
        "audited as the signed-in user"
    );
    assert_clean(&mut b, "inputs (engineer)");
    b.screenshot(&shots.join("inputs.png"), false)
        .await
        .unwrap();
    sign_out(&mut b).await;

    // Auditor: downloads the enterprise report.
    sign_in(&mut b, &base, "zhao.auditor").await;
    go(
        &mut b,
        "#/reports",
        "!!document.querySelector('#report-go')",
    )
    .await;
    b.click("#report-go").await.unwrap();
    b.wait_for(
        "document.querySelector('#report-msg').textContent === '已下载'",
        WAIT,
    )
    .await
    .unwrap();
    assert_clean(&mut b, "reports (auditor)");
    b.screenshot(&shots.join("reports.png"), false)
        .await
        .unwrap();

    b.close().await.unwrap();
    let _ = stop_agent.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), agent_task).await;
    gw.stop().await;
    store.cleanup().await;
}
