#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `shopfloor-agent probe modbus` against the simulator's real Modbus TCP server.

use std::process::Command;

use shopfloor_devices::Value;
use shopfloor_sim::{Plant, Scenario, StartOptions};

const BIN: &str = env!("CARGO_BIN_EXE_shopfloor-agent");

async fn meter_plant() -> Plant {
    let text = "name = \"t\"\n[[modbus_tcp]]\nname = \"gw\"\nlisten = \"127.0.0.1:0\"\n\
                [[device]]\nname = \"m1\"\ntemplate = \"eastron-sdm630\"\nserver = \"gw\"\nunit = 3\n";
    let loaded = Scenario::from_str(text, "t.toml", std::path::Path::new(".")).unwrap();
    let plant = Plant::start(loaded, StartOptions::default()).await.unwrap();
    plant
        .signals("m1")
        .unwrap()
        .set("energy_import_kwh", Value::Float(1234.5));
    plant
}

async fn run(args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(BIN).args(&args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

fn args(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_reads_and_decodes_an_energy_register() {
    let plant = meter_plant().await;
    let port = plant.tcp_addr("gw").unwrap().port();
    let (code, out, err) = run(args(&format!(
        "probe modbus --host 127.0.0.1 --port {port} --unit 3 --kind input --address 0x48 --count 1 --type f32 --order ABCD"
    )))
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("input 72 (0x0048)"), "{out}");
    let line = out.lines().find(|l| l.starts_with("72 ")).unwrap();
    assert!(
        line.contains("449A 5000") && line.ends_with("1234.5"),
        "{line}"
    );
    // Word-swapped order on the same registers gives another number, as on a misconfigured device.
    let (code, out, _) = run(args(&format!(
        "probe modbus --host 127.0.0.1 --port {port} --unit 3 --kind input --address 72 --type f32 --order CDAB"
    )))
    .await;
    assert_eq!(code, 0);
    assert!(
        !out.lines()
            .any(|l| l.starts_with("72 ") && l.ends_with("1234.5")),
        "{out}"
    );
    plant.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_reports_device_errors_with_exit_1_and_bad_arguments_with_exit_2() {
    let plant = meter_plant().await;
    let port = plant.tcp_addr("gw").unwrap().port();
    // No register 1000 on the meter: exception 02.
    let (code, _, err) = run(args(&format!(
        "probe modbus --host 127.0.0.1 --port {port} --unit 3 --kind input --address 1000"
    )))
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("illegal data address"), "{err}");
    plant.stop().await;
    for (bad, says) in [
        (
            "probe modbus --host 127.0.0.1 --kind input --address 70000",
            "--address",
        ),
        (
            "probe modbus --host 127.0.0.1 --kind inputs2 --address 1",
            "unknown table",
        ),
        (
            "probe modbus --host 127.0.0.1 --kind coil --address 1 --type f32",
            "must be bool",
        ),
        (
            "probe modbus --host 127.0.0.1 --kind holding --address 1 --type f64 --count 40",
            "at most 125",
        ),
        (
            "probe modbus --host 127.0.0.1 --kind holding --address 1 --order ABDC",
            "unknown byte order",
        ),
        ("probe modbus --kind holding --address 1", "--host"),
        (
            "probe modbus --host 127.0.0.1 --kind holding --address 1 --unit 300",
            "--unit",
        ),
    ] {
        let (code, _, err) = run(args(bad)).await;
        assert_eq!(code, 2, "{bad}: {err}");
        assert!(err.contains(says), "{bad}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_of_an_unreachable_device_fails_with_exit_1() {
    // A port nobody listens on: bind then drop.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, _, err) = run(args(&format!(
        "probe modbus --host 127.0.0.1 --port {port} --kind holding --address 0 --timeout-ms 300"
    )))
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("cannot connect"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browse_prints_the_node_tree_of_a_machine_tool() {
    let dir = tempfile::tempdir().unwrap();
    let text = "name = \"t\"\n[[opcua]]\nname = \"ua\"\nlisten = \"127.0.0.1:0\"\n\
                [[device]]\nname = \"mt-01\"\ntemplate = \"cnc-opcua-machinetool\"\nserver = \"ua\"\n\
                [device.machine]\ncycle_s = 10\nphases = [{ state = \"producing\", for_s = 600 }]\n";
    let loaded = Scenario::from_str(text, "t.toml", std::path::Path::new(".")).unwrap();
    let plant = Plant::start(
        loaded,
        StartOptions {
            pki_dir: Some(dir.path().join("server")),
            epoch: None,
        },
    )
    .await
    .unwrap();
    let endpoint = plant.opcua_endpoint("ua").unwrap();
    let pki = dir.path().join("client").display().to_string();
    let (code, out, err) = run(vec![
        "browse".into(),
        "opcua".into(),
        "--endpoint".into(),
        endpoint.clone(),
        "--depth".into(),
        "6".into(),
        "--pki-dir".into(),
        pki,
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with(&format!("opcua {endpoint}")), "{out}");
    assert!(out.contains("mt-01"), "{out}");
    assert!(
        out.contains("MachineryItemState") || out.contains("Monitoring"),
        "{out}"
    );
    // Executing (3) while producing, shown as a variable value.
    assert!(
        out.lines()
            .any(|l| l.contains("[Variable]") && l.contains(" = ")),
        "{out}"
    );
    plant.stop().await;
    let (code, _, err) = run(args("browse opcua --endpoint http://example")).await;
    assert_eq!(code, 2);
    assert!(err.contains("opc.tcp://"), "{err}");
}
