//! End to end: simulator → agent → broker → gateway → API, with the API's numbers checked
//! against `shopfloor-gateway calc` on the evidence the API exports, at every level; forged
//! payloads quarantined while the gateway keeps serving. On SQLite with the embedded broker,
//! and on PostgreSQL with the shared Mosquitto (CI).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use shopfloor_store::Store;

const ENTITIES: [&str; 5] = [
    "p1",
    "p1/e1",
    "p1/e1/w1",
    "p1/e1/w1/l1",
    "p1/e1/w1/l1/cnc-01",
];

async fn end_to_end(store: TestStore, broker: Broker) {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("e2e");
    let plant = agent::start_plant().await;
    let agent_data = dir.path().join("agent");
    let key = shopfloor_agent::identity::load_or_create(&agent_data).unwrap();
    let public_key = shopfloor_core::batch::public_key_text(&key.verifying_key());
    let registry = write_registry(dir.path(), &public_key);
    let config = write_config(dir.path(), "gw-1", &store.url, &broker, &prefix, &registry);
    let gw = start_gateway(&config).await;
    let viewer = token(&gw.db, "viewer").await;
    let auditor = token(&gw.db, "auditor").await;

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

    // One whole minute of data, rolled up.
    let start = now_ms();
    let from = minute(start) + 60_000;
    let to = from + 60_000;
    wait_until(Duration::from_secs(200), "a whole minute of data", || {
        now_ms() > to + 3_000
    })
    .await;
    let q = format!(
        "entity=p1/e1/w1/l1/cnc-01&from={}&to={}",
        rfc3339(from),
        rfc3339(to)
    );
    let mut rolled = false;
    for _ in 0..60 {
        let v = get_json(gw.http, &format!("/api/v1/indicators?{q}"), &viewer);
        if v["indicators"]["actual_production_time_s"]["value"]
            .as_f64()
            .is_some_and(|x| x > 0.0)
        {
            rolled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(rolled, "no production time rolled up for the CNC");

    // Forged payloads while serving: quarantined, the gateway keeps serving and storing.
    let heads_before = gw.db.agent_heads().await.unwrap();
    let mut forger = Signer::new(AGENT, new_key());
    let forged = forger.next(json!({"from": from, "to": to, "devices": []}));
    publish_all(
        broker.port(),
        &prefix,
        AGENT,
        vec![b"not json".to_vec(), forged],
    )
    .await;
    wait_until(Duration::from_secs(20), "two quarantined payloads", || {
        let (s, body) = http(gw.http, "GET", "/api/v1/quarantine", Some(&auditor), b"");
        s == 200
            && serde_json::from_slice::<serde_json::Value>(&body).is_ok_and(|v| {
                let text = v.to_string();
                text.contains("bad_signature") && text.contains("malformed")
            })
    })
    .await;
    let (s, _) = http(gw.http, "GET", "/healthz", None, b"");
    assert_eq!(s, 200);
    let last_before = heads_before
        .iter()
        .find(|h| h.agent == AGENT)
        .unwrap()
        .last_seq;
    let db = gw.db.clone();
    let mut advanced = false;
    for _ in 0..100 {
        let heads = db.agent_heads().await.unwrap();
        let h = heads.iter().find(|h| h.agent == AGENT).unwrap();
        if h.last_seq > last_before + 1 {
            assert_eq!(h.missing, 0, "no gaps in the agent's chain");
            advanced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        advanced,
        "the agent's batches kept being stored after the forged ones"
    );

    // Every level: the API's numbers are calc's numbers on the exported evidence.
    for entity in ENTITIES {
        let q = format!("entity={entity}&from={}&to={}", rfc3339(from), rfc3339(to));
        let api = get_json(gw.http, &format!("/api/v1/indicators?{q}"), &viewer);
        let (status, evidence) = http(
            gw.http,
            "GET",
            &format!("/api/v1/evidence?{q}"),
            Some(&auditor),
            b"",
        );
        assert_eq!(
            status,
            200,
            "evidence {entity}: {}",
            String::from_utf8_lossy(&evidence)
        );
        let file = dir
            .path()
            .join(format!("evidence-{}.json", entity.replace('/', "_")));
        std::fs::write(&file, &evidence).unwrap();
        let calc = calc(&file);
        assert_same_values(entity, &api, &calc);
    }
    // And the values are plausible: the simulated CNC produced and the meter counted.
    let cnc = get_json(
        gw.http,
        &format!(
            "/api/v1/indicators?entity=p1/e1/w1/l1/cnc-01&from={}&to={}",
            rfc3339(from),
            rfc3339(to)
        ),
        &viewer,
    );
    let apt = cnc["indicators"]["actual_production_time_s"]["value"]
        .as_f64()
        .unwrap();
    assert!(apt > 0.0 && apt <= 60.0, "APT {apt} s in one minute");
    let ws = get_json(
        gw.http,
        &format!(
            "/api/v1/indicators?entity=p1/e1/w1&from={}&to={}",
            rfc3339(from),
            rfc3339(to)
        ),
        &viewer,
    );
    let kwh = ws["indicators"]["electricity_kwh"]["value"]
        .as_f64()
        .unwrap();
    assert!(kwh > 0.0, "the meter's energy reached the workshop: {kwh}");

    let _ = stop_agent.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), agent_task).await;
    gw.stop().await;
    store.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn end_to_end_sqlite_embedded_broker() {
    let dir = tempfile::tempdir().unwrap();
    let store = TestStore::sqlite(dir.path()).await;
    end_to_end(store, Broker::Embedded(free_port())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn end_to_end_postgres_mosquitto() {
    let test = "end_to_end_postgres_mosquitto";
    let Some(port) = mosquitto(test) else { return };
    let Some(store) = TestStore::postgres(test).await else {
        return;
    };
    end_to_end(
        store,
        Broker::External {
            port,
            group: unique("sf"),
        },
    )
    .await;
}
