#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The shipped scenarios load, and the `shopfloor-sim` binary serves one.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use shopfloor_sim::Scenario;

const BIN: &str = env!("CARGO_BIN_EXE_shopfloor-sim");

fn scenarios_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../configs/scenarios")
}

#[test]
fn every_shipped_scenario_is_valid() {
    let mut n = 0;
    for entry in std::fs::read_dir(scenarios_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n >= 1);
}

#[test]
fn bad_scenarios_name_the_field() {
    let cases = [
        (
            "name = \"x\"\n[[device]]\nname = \"a\"\ntemplate = \"nope\"\nserver = \"s\"\n",
            "device[0].template",
        ),
        ("name = \"x\"\ntime_scale = -1\ndevice = []\n", "time_scale"),
        (
            "name = \"x\"\n[[modbus_tcp]]\nname = \"s\"\nlisten = \"127.0.0.1:0\"\n[[device]]\nname = \"a\"\ntemplate = \"eastron-sdm630\"\nserver = \"s\"\n[[device.ramp]]\npoint = \"nope\"\nper_hour = 1\n",
            "device[0].ramp[0].point",
        ),
        (
            "name = \"x\"\n[[modbus_tcp]]\nname = \"s\"\nlisten = \"127.0.0.1:0\"\n[[device]]\nname = \"a\"\ntemplate = \"eastron-sdm630\"\nserver = \"s\"\n[[device]]\nname = \"b\"\ntemplate = \"eastron-sdm630\"\nserver = \"s\"\n",
            "device[1].unit",
        ),
        (
            "name = \"x\"\n[[device]]\nname = \"a\"\ntemplate = \"eastron-sdm630\"\nserver = \"nowhere\"\n",
            "device[0].server",
        ),
        ("name = \"x\"\nspeed = 3\ndevice = []\n", "unknown field"),
    ];
    for (text, path) in cases {
        let e = Scenario::from_str(text, "bad.toml", std::path::Path::new(".")).unwrap_err();
        assert!(e.to_string().contains(path), "{e} should name {path}");
    }
}

#[test]
fn the_binary_serves_the_modbus_line_scenario() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(scenarios_dir().join("modbus-line.toml")).unwrap();
    let link = dir.path().join("rs485");
    let text = text
        .replace("127.0.0.1:5020", "127.0.0.1:0")
        .replace("127.0.0.1:5023", "127.0.0.1:0")
        .replace("/tmp/shopfloor-rs485-line1", &link.display().to_string());
    let file = dir.path().join("line.toml");
    std::fs::write(&file, text).unwrap();
    let mut child = Command::new(BIN)
        .arg("--scenario")
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut out = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let done = line.starts_with("Ctrl-C");
        out.push(line);
        if done {
            break;
        }
    }
    let gw = out
        .iter()
        .find(|l| l.contains("modbus-tcp") && l.contains("gw-line1"))
        .unwrap();
    let addr: std::net::SocketAddr = gw.split_whitespace().last().unwrap().parse().unwrap();
    assert!(
        out.iter()
            .any(|l| l.contains("modbus-rtu") && l.contains(&link.display().to_string())),
        "{out:?}"
    );
    assert!(link.exists(), "the stable symlink to the pty exists");
    // Read cnc-01's status word and part counter over real Modbus TCP.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let regs = rt.block_on(async {
        use tokio_modbus::prelude::*;
        let mut ctx = tokio_modbus::client::tcp::connect_slave(addr, Slave(1))
            .await
            .unwrap();
        ctx.read_holding_registers(0, 4).await.unwrap().unwrap()
    });
    let parts = (u64::from(regs[2]) << 16) | u64::from(regs[3]);
    assert_eq!(regs[0] & 1, 1, "cnc-01 starts producing: run bit set");
    assert!(parts >= 4_294_960_000, "counter starts near 2^32: {parts}");
    child.kill().unwrap();
    let _ = child.wait();
}

#[test]
fn a_bad_scenario_exits_2_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "name = \"x\"\ntime_scale = 0\ndevice = []\n").unwrap();
    let out = Command::new(BIN)
        .arg("--scenario")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("time_scale"));
    let out = Command::new(BIN).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "missing --scenario is a usage error"
    );
}
