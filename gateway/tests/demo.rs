//! `shopfloor-gateway demo` as a user runs it: the built binary, for a bounded time, checked
//! from outside through its API, its output, Ctrl-C and the auditor's commands.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{assert_same_values, calc, get_json};
use jiff::{Timestamp, ToSpan, tz::TimeZone};

const BIN: &str = env!("CARGO_BIN_EXE_shopfloor-gateway");

/// The demo's child process, killed if the test fails half way.
struct Demo {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Demo {
    fn start(args: &[&str]) -> Demo {
        let mut child = Command::new(BIN)
            .arg("demo")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Demo {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a stdout line containing `needle` and returns it.
    fn line(&mut self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(_) => panic!(
                    "no line with {needle:?} within {within:?}; output so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits for the summary; returns the HTTP address and the printed API token.
    fn serving(&mut self) -> (SocketAddr, String) {
        let url = value_after(
            &self.line("dashboard", Duration::from_secs(120)),
            "dashboard",
        );
        let token = value_after(&self.line("API token", Duration::from_secs(5)), "API token");
        let addr = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .unwrap();
        (addr, token)
    }

    /// Ctrl-C, then the exit status and the rest of the output.
    fn interrupt(&mut self) -> (std::process::ExitStatus, Vec<String>) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-INT", &pid]).status().unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let rest: Vec<String> = self.lines.try_iter().collect();
                return (status, rest);
            }
            assert!(
                Instant::now() < deadline,
                "the demo did not stop after Ctrl-C"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn value_after(line: &str, key: &str) -> String {
    line.split_once(key)
        .map(|(_, rest)| rest.split_whitespace().next().unwrap_or("").to_owned())
        .unwrap_or_else(|| panic!("{key:?} not in {line:?}"))
}

/// `shopfloor-gateway verify` on the demo's configuration: asserts exit 0, returns the report.
fn verify(config: &Path, when: &str) -> String {
    let out = Command::new(BIN)
        .args(["verify", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "verify {when}: {text}");
    text
}

fn rfc(t: Timestamp, tz: &TimeZone) -> String {
    t.to_zoned(tz.clone())
        .strftime("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
        .replace('+', "%2B")
}

fn reached(data: &Path) -> Option<Timestamp> {
    let text = std::fs::read_to_string(data.join("demo.toml")).ok()?;
    let line = text.lines().find(|l| l.starts_with("reached = "))?;
    line.trim_start_matches("reached = ")
        .trim_matches('"')
        .parse()
        .ok()
}

/// The demo simulates yesterday and today at ×3000; yesterday's park indicators from the API
/// equal `calc` on the evidence the API exports; yesterday gets sealed; Ctrl-C stops it cleanly
/// with exit 0; `verify` then passes on its data directory; a second start goes on where the
/// first one stopped.
#[test]
fn demo_serves_a_park_whose_indicators_recompute() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let data_arg = data.to_str().unwrap();
    let t0 = Instant::now();
    let mut demo = Demo::start(&["--speed", "3000", "--port", "0", "--data-dir", data_arg]);
    let (addr, token) = demo.serving();
    // The printed example request works as printed.
    let try_line = demo.line("try ", Duration::from_secs(5));
    let example = try_line
        .split('\'')
        .find(|p| p.starts_with("http://"))
        .unwrap()
        .trim_start_matches(&format!("http://{addr}"))
        .to_owned();
    let v = get_json(addr, &example, &token);
    assert_eq!(v["entity"], "p1", "{v}");
    // The dashboard page answers.
    let (status, page) = common::http(addr, "GET", "/", None, b"");
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&page).contains("<html"));
    eprintln!("demo serving after {:.1} s", t0.elapsed().as_secs_f64());
    // Whoever holds port 1883 (the machine's Mosquitto), the demo says so and goes on.
    if TcpListener::bind(("127.0.0.1", 1883)).is_err() {
        assert!(
            demo.seen
                .iter()
                .any(|l| l.contains("port 1883 (MQTT) is taken")),
            "{:#?}",
            demo.seen
        );
    }

    // Wait until simulated time has passed today's midnight, then for the roll-ups.
    let tz = TimeZone::get("Asia/Shanghai").unwrap();
    let today = Timestamp::now()
        .to_zoned(tz.clone())
        .date()
        .to_zoned(tz.clone())
        .unwrap()
        .timestamp();
    let yesterday = today.checked_sub(24.hours()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(240);
    while reached(&data).is_none_or(|r| r < today.checked_add(30.minutes()).unwrap()) {
        assert!(
            Instant::now() < deadline,
            "simulated time did not reach today"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    // Yesterday, park level: the API's indicators equal calc on the exported evidence. The
    // roll-ups of yesterday's last minutes may still be running: take the evidence between
    // two equal answers of the API.
    let q = format!(
        "entity=p1&from={}&to={}",
        rfc(yesterday, &tz),
        rfc(today, &tz)
    );
    let file = dir.path().join("park-yesterday.json");
    let deadline = Instant::now() + Duration::from_secs(180);
    let (api, evidence) = loop {
        let before = get_json(addr, &format!("/api/v1/indicators?{q}"), &token);
        let evidence = get_json(addr, &format!("/api/v1/evidence?{q}"), &token);
        let after = get_json(addr, &format!("/api/v1/indicators?{q}"), &token);
        if before["indicators"] == after["indicators"] {
            break (after, evidence);
        }
        assert!(
            Instant::now() < deadline,
            "yesterday's indicators keep changing"
        );
        std::thread::sleep(Duration::from_secs(3));
    };
    std::fs::write(&file, serde_json::to_vec(&evidence).unwrap()).unwrap();
    assert_same_values("p1", &api, &calc(&file));
    let ind = &api["indicators"];
    for id in [
        "oee",
        "availability",
        "key_process_nc_rate",
        "electricity_kwh",
        "energy_kgce",
        "value_added_cny",
        "energy_per_value_added",
        "water_per_value_added",
        "defect_rate",
        "equipment_networking_rate",
    ] {
        let v = ind[id]["value"].as_f64();
        assert!(v.is_some_and(|v| v > 0.0), "{id}: {}", ind[id]);
    }
    // Manual presses and stations count: not every key process is NC-controlled.
    let nc = ind["key_process_nc_rate"]["value"].as_f64().unwrap();
    assert!(nc < 1.0, "key_process_nc_rate {nc}");
    let enterprises: Vec<&str> = evidence["entities"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["id"].as_str())
                .filter(|id| id.matches('/').count() == 1)
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(enterprises, ["p1/e1", "p1/e2"], "{}", evidence["entities"]);
    // Every workshop has machines that reported states and meters that reported consumption.
    for w in ["p1/e1/w1", "p1/e1/w2", "p1/e2/w1"] {
        let q = format!(
            "entity={w}&from={}&to={}",
            rfc(yesterday, &tz),
            rfc(today, &tz)
        );
        let v = get_json(addr, &format!("/api/v1/indicators?{q}"), &token);
        for id in ["availability", "electricity_kwh", "energy_kgce"] {
            assert!(
                v["indicators"][id]["value"]
                    .as_f64()
                    .is_some_and(|x| x > 0.0),
                "{w} {id}: {}",
                v["indicators"][id]
            );
        }
    }

    // Yesterday is sealed for the auditors (the sealer passes every minute).
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let seals = get_json(addr, "/api/v1/seals?entity=p1", &token);
        let sealed = seals["seals"].as_array().is_some_and(|a| !a.is_empty());
        if sealed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "yesterday was not sealed: {seals}"
        );
        std::thread::sleep(Duration::from_secs(2));
    }

    // Ctrl-C: everything stops, exit 0, and the data directory is named for next time.
    let (status, rest) = demo.interrupt();
    assert!(status.success(), "{status}");
    assert!(
        rest.iter()
            .any(|l| l.starts_with("stopped.") && l.contains(data_arg)),
        "{rest:#?}"
    );
    let stopped_at = reached(&data).unwrap();

    // The auditor's check of everything stored and sealed.
    let config = data.join("config/gateway.toml");
    let text = verify(&config, "after Ctrl-C");
    assert!(text.contains("PASS"), "{text}");
    assert!(!text.contains(" 0 sealed days"), "{text}");

    // Again on the same directory: simulated time goes on from where it stopped. Then killed
    // (no clean stop), and a third time: simulated time still never repeats, so the stored
    // data stays consistent and the auditor's check still passes.
    let mut again = Demo::start(&["--speed", "3000", "--port", "0", "--data-dir", data_arg]);
    let time = again.line("time", Duration::from_secs(120));
    assert!(time.contains("simulated ×3000"), "{time}");
    again.line("Ctrl-C stops.", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(5));
    assert!(reached(&data).unwrap() >= stopped_at);
    again.child.kill().unwrap();
    again.child.wait().unwrap();
    drop(again);
    let mut third = Demo::start(&["--speed", "3000", "--port", "0", "--data-dir", data_arg]);
    let (addr, token) = third.serving();
    std::thread::sleep(Duration::from_secs(10));
    let minute = Timestamp::from_second(Timestamp::now().as_second() / 60 * 60).unwrap();
    let q = format!("entity=p1&from={}&to={}", rfc(today, &tz), rfc(minute, &tz));
    let v = get_json(addr, &format!("/api/v1/indicators?{q}"), &token);
    assert!(
        v["indicators"]["availability"]["value"].as_f64().is_some(),
        "{v}"
    );
    let (status, _) = third.interrupt();
    assert!(status.success());
    verify(&config, "after a kill and a restart");
}

/// A port given on the command line that is taken is an error naming the option; nothing is
/// started and exit status is 1.
#[test]
fn a_taken_port_given_on_the_command_line_is_an_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["demo", "--port", &port, "--data-dir"])
        .arg(dir.path().join("d"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("--port: 127.0.0.1:{port} is not available")),
        "{err}"
    );
    let out = Command::new(BIN)
        .args(["demo", "--speed", "0.5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--speed: 0.5"));
}
