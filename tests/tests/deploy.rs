//! The deployment kit in `deploy/` (deploy/README.md):
//!
//! - the hardened systemd units in `deploy/systemd/`: systemd's own checker accepts them, and
//!   systemd's security analysis rates each at most 2.0 of 10 (lower is safer; a unit without
//!   sandboxing is about 9.6). Needs `systemd-analyze` (Debian's systemd package);
//! - the compose stack in `deploy/compose/`: every file it mounts exists or is written by
//!   `bootstrap.sh`, the paths the gateway's and the agent's configurations name are mounted in
//!   their containers, and both configurations pass the binaries' own `check` with the
//!   container paths mapped to those files (`bootstrap.sh files` run into a temporary
//!   directory: needs bash, openssl and mosquitto_passwd);
//! - the Grafana dashboards in `deploy/grafana/`: every metric in their PromQL is one the
//!   gateway or the agent registers (read from `gateway/src/metrics.rs` and
//!   `agent/src/metrics.rs`), every indicator id is a catalog id that applies at the level of
//!   the entities the query selects, and the provisioning points where compose mounts them.
//!
//! Tools that are missing are required in CI and skipped with a notice elsewhere. The compose
//! stack itself is not started here (that needs a Docker Engine).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use shopfloor_core::catalog;
use shopfloor_core::path::Level;
use shopfloor_tests::repo_root;

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Whether `tool` runs (`tool arg`); required in CI, skipped with a notice elsewhere.
fn have(tool: &str, arg: &str, test: &str) -> bool {
    // Spawning is the test: some tools (mosquitto_passwd) exit 1 on any informational call.
    let ok = Command::new(tool).arg(arg).output().is_ok();
    if !ok {
        assert!(!in_ci(), "{test} needs {tool} in CI");
        let _ = writeln!(std::io::stderr(), "skipped: {test} needs {tool}");
    }
    ok
}

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("sf-deploy-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

// ---------------------------------------------------------------------------------------------
// systemd

const ANALYZE: &str = "systemd-analyze";
/// Highest accepted exposure, in systemd's tenths (20 = 2.0).
const MAX_EXPOSURE: &str = "20";

fn available() -> bool {
    let ok = Command::new(ANALYZE)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").is_err(),
            "{ANALYZE} is required in CI (apt-get install systemd)"
        );
        let _ = writeln!(
            std::io::stderr(),
            "skipped: the systemd unit checks need {ANALYZE}"
        );
    }
    ok
}

/// The unit with its binary path replaced by one that exists here (`verify` checks it).
fn unit_copy(dir: &Path, name: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(repo_root().join("deploy/systemd").join(name)).unwrap();
    assert!(
        text.contains("/usr/local/bin/shopfloor-"),
        "{name}: ExecStart"
    );
    let text = text
        .replace("/usr/local/bin/shopfloor-gateway", "/bin/true")
        .replace("/usr/local/bin/shopfloor-agent", "/bin/true");
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn units_verify_and_are_sandboxed() {
    if !available() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("sf-units-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["shopfloor-gateway.service", "shopfloor-agent.service"] {
        let unit = unit_copy(&dir, name);
        let out = Command::new(ANALYZE)
            .args(["verify", "--man=no"])
            .arg(&unit)
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new(ANALYZE)
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(format!("--threshold={MAX_EXPOSURE}"))
            .arg(&unit)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let summary = text
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or("no summary");
        eprintln!("{summary}");
        assert!(
            out.status.success(),
            "{name}: above {MAX_EXPOSURE}: {summary}"
        );
        // The same analysis fails an unsandboxed unit, so the check can fail.
        let bare = dir.join(format!("bare-{name}"));
        std::fs::write(&bare, "[Service]\nExecStart=/bin/true\n").unwrap();
        let out = Command::new(ANALYZE)
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(format!("--threshold={MAX_EXPOSURE}"))
            .arg(&bare)
            .output()
            .unwrap();
        assert!(!out.status.success(), "a bare unit passed the threshold");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// The built binaries

/// `target/<profile>/` of this test executable (`target/<profile>/deps/deploy-…`).
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_owned()
}

/// Newest modification time of the files below `dir`.
fn newest(dir: &Path) -> SystemTime {
    let mut t = SystemTime::UNIX_EPOCH;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            let m = if p.is_dir() {
                newest(&p)
            } else {
                e.metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH)
            };
            t = t.max(m);
        }
    }
    t
}

/// The workspace binary `name` of package `package`, built (debug) if it is missing or older
/// than any source of the workspace. `cargo test --workspace` has built all of them already.
fn binary(package: &str, name: &str) -> PathBuf {
    static BUILT: OnceLock<std::sync::Mutex<BTreeSet<String>>> = OnceLock::new();
    let path = bin_dir().join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let root = repo_root();
    // What goes into the binaries (never what tests write, such as test data or screenshots).
    let mut inputs = vec![root.join("Cargo.lock"), root.join("Cargo.toml")];
    for krate in [
        "core",
        "keyfile",
        "clock",
        "devices",
        "acquire",
        "sim",
        "agent",
        "store",
        "store-sqlite",
        "store-pg",
        "gateway",
    ] {
        for part in [
            "src",
            "Cargo.toml",
            "migrations",
            ".sqlx",
            "assets",
            "openapi.json",
        ] {
            inputs.push(root.join(krate).join(part));
        }
    }
    for data in ["devices", "coefficients", "assessments", "targets.toml"] {
        inputs.push(root.join("configs").join(data));
    }
    let sources = inputs
        .iter()
        .map(|p| match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => newest(p),
            Ok(m) => m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            Err(_) => SystemTime::UNIX_EPOCH,
        })
        .max()
        .unwrap();
    let built = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t >= sources);
    let mut done = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !built && !done.contains(name) {
        eprintln!("building {name} (missing or older than the sources)");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let o = Command::new(cargo)
            .current_dir(&root)
            .args(["build", "--locked", "-p", package, "--bin", name])
            .output()
            .unwrap();
        assert!(o.status.success(), "cargo build {name}: {}", show(&o));
        done.insert(name.to_owned());
    }
    assert!(path.is_file(), "{} missing", path.display());
    path
}

// ---------------------------------------------------------------------------------------------
// compose.yaml, read line by line (no YAML parser among this crate's dependencies). The
// reader knows exactly the shapes compose.yaml uses and fails on anything else, so a change
// of shape is noticed here instead of being skipped.

#[derive(Debug, Default)]
struct Service {
    scalars: BTreeMap<String, String>,
    lists: BTreeMap<String, Vec<String>>,
    maps: BTreeMap<String, BTreeMap<String, String>>,
}

#[derive(Debug, Default)]
struct Compose {
    services: BTreeMap<String, Service>,
    /// Top-level secrets: name → file.
    secrets: BTreeMap<String, String>,
}

/// The line without a trailing comment (` #` outside quotes).
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match (quote, b) {
            (None, b'"' | b'\'') => quote = Some(b),
            (Some(q), _) if q == b => quote = None,
            (None, b'#') if i == 0 || bytes[i - 1] == b' ' => return line[..i].trim_end(),
            _ => {}
        }
    }
    line.trim_end()
}

fn unquote(v: &str) -> String {
    let v = v.trim();
    v.strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .unwrap_or(v)
        .to_owned()
}

fn parse_compose(src: &str) -> Compose {
    let mut c = Compose::default();
    let (mut section, mut service, mut field, mut secret) =
        (String::new(), String::new(), String::new(), String::new());
    for (n, raw) in src.lines().enumerate() {
        let line = strip_comment(raw);
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("compose.yaml line {}: {raw}", n + 1);
        assert!(!line.contains('\t'), "{at}: tab");
        let indent = line.len() - line.trim_start().len();
        let item = line.trim_start();
        let (key, value) = match item.strip_prefix("- ") {
            Some(_) => ("-", item[2..].trim()),
            None => {
                let (k, v) = item
                    .split_once(':')
                    .unwrap_or_else(|| panic!("{at}: no key"));
                (k, v.trim())
            }
        };
        match (indent, section.as_str()) {
            (0, _) => section = key.to_owned(),
            (2, "services") => {
                service = key.to_owned();
                c.services.insert(service.clone(), Service::default());
            }
            (4, "services") => {
                field = key.to_owned();
                if !value.is_empty() {
                    let s = c.services.get_mut(&service).unwrap();
                    s.scalars.insert(field.clone(), unquote(value));
                }
            }
            (6, "services") => {
                let s = c.services.get_mut(&service).unwrap();
                if key == "-" {
                    s.lists
                        .entry(field.clone())
                        .or_default()
                        .push(unquote(value));
                } else {
                    s.maps
                        .entry(field.clone())
                        .or_default()
                        .insert(key.to_owned(), unquote(value));
                }
            }
            // depends_on: <service>: condition: …
            (8, "services") if field == "depends_on" => {}
            (2, "secrets") => secret = key.to_owned(),
            (4, "secrets") if key == "file" => {
                c.secrets.insert(secret.clone(), unquote(value));
            }
            (_, "name") => {}
            _ => panic!("{at}: unexpected indentation {indent} in `{section}`"),
        }
    }
    c
}

fn compose() -> Compose {
    parse_compose(&text(&repo_root().join("deploy/compose/compose.yaml")))
}

/// Host paths that `bootstrap.sh files` writes (relative to deploy/compose/).
const BOOTSTRAP_DIRS: [&str; 3] = ["./secrets/", "./certs/", "./state/"];

fn from_bootstrap(host: &str) -> bool {
    BOOTSTRAP_DIRS.iter().any(|d| host.starts_with(d))
}

/// (host, container) bind mounts and secrets of one service, host paths as written.
fn mounts(c: &Compose, service: &str) -> Vec<(String, String)> {
    let s = &c.services[service];
    let mut out = Vec::new();
    for v in s.lists.get("volumes").into_iter().flatten() {
        let mut parts = v.split(':');
        let (host, container) = (parts.next().unwrap(), parts.next().unwrap());
        if let Some(mode) = parts.next() {
            assert!(mode == "ro" || mode == "rw", "{service}: volume {v}");
        }
        assert!(
            host.starts_with('.') || host.starts_with('/'),
            "{service}: {v}: only bind mounts are expected"
        );
        out.push((host.to_owned(), container.to_owned()));
    }
    for name in s.lists.get("secrets").into_iter().flatten() {
        let file = c
            .secrets
            .get(name)
            .unwrap_or_else(|| panic!("{service}: secret {name} is not defined"));
        out.push((file.clone(), format!("/run/secrets/{name}")));
    }
    out
}

#[test]
fn compose_references_are_consistent() {
    let root = repo_root();
    let dir = root.join("deploy/compose");
    let c = compose();
    for want in [
        "postgres",
        "mosquitto",
        "gateway",
        "agent",
        "plant",
        "prometheus",
        "grafana",
    ] {
        assert!(c.services.contains_key(want), "service {want} missing");
    }
    let dockerfile = text(&root.join("deploy/docker/Dockerfile"));
    let bootstrap = text(&dir.join("bootstrap.sh"));
    for (name, s) in &c.services {
        // Every service runs as the bootstrap's user (bind-mounted 0600 secrets).
        assert!(
            s.scalars
                .get("user")
                .is_some_and(|u| u.starts_with("${SHOPFLOOR_UID")),
            "{name}: user"
        );
        if let Some(build) = s.maps.get("build") {
            assert_eq!(
                build.get("context").map(String::as_str),
                Some("../.."),
                "{name}"
            );
            assert!(
                dir.join("../..").join(&build["dockerfile"]).is_file(),
                "{name}"
            );
            let stage = format!(" AS {}\n", build["target"]);
            assert!(
                dockerfile.contains(&stage),
                "{name}: no Dockerfile stage{stage}"
            );
        } else {
            assert!(s.scalars.contains_key("image"), "{name}: image or build");
        }
        for dep in s.maps.get("depends_on").into_iter().flat_map(|m| m.keys()) {
            assert!(c.services.contains_key(dep), "{name}: depends on {dep}");
        }
        if let Some(mode) = s.scalars.get("network_mode") {
            let other = mode.strip_prefix("service:").unwrap();
            assert!(c.services.contains_key(other), "{name}: {mode}");
        }
        for (host, container) in mounts(&c, name) {
            assert!(container.starts_with('/'), "{name}: {container}");
            if from_bootstrap(&host) {
                // Written by bootstrap.sh: its name appears there (the files test runs it).
                let base = Path::new(&host).file_name().unwrap().to_str().unwrap();
                assert!(
                    bootstrap.contains(base),
                    "{name}: {host} is not written by bootstrap.sh"
                );
            } else {
                assert!(dir.join(&host).exists(), "{name}: {host} does not exist");
            }
        }
    }
    // The secrets the services use are exactly the ones defined, and all are bootstrap's.
    let used: BTreeSet<&String> = c
        .services
        .values()
        .flat_map(|s| s.lists.get("secrets").into_iter().flatten())
        .collect();
    assert_eq!(used, c.secrets.keys().collect(), "secrets defined vs used");
    for file in c.secrets.values() {
        assert!(file.starts_with("./secrets/"), "{file}");
    }
    // The image build context keeps what the build needs and drops what bootstrap writes.
    let ignore = text(&root.join(".dockerignore"));
    let ignored: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for keep in [".sqlx", "configs", "Cargo.lock", "store-pg", "docs"] {
        assert!(
            !ignored.iter().any(|l| l.contains(keep)),
            ".dockerignore drops {keep}"
        );
    }
    for drop in BOOTSTRAP_DIRS {
        let p = format!(
            "deploy/compose/{}",
            drop.trim_start_matches("./").trim_end_matches('/')
        );
        assert!(ignored.contains(&p.as_str()), ".dockerignore keeps {p}");
    }
}

#[test]
fn compose_reader_fails_on_unknown_shapes() {
    // The reader is strict: an unexpected nesting is an error, not something skipped.
    let bad = "services:\n  a:\n    build:\n      x:\n        y:\n          z: 1\n";
    assert!(std::panic::catch_unwind(|| parse_compose(bad)).is_err());
    let c = parse_compose(
        "services:\n  a:\n    image: x # c\n    volumes:\n      - ./a:/b:ro\nsecrets:\n  s:\n    file: ./secrets/s\n",
    );
    assert_eq!(c.services["a"].scalars["image"], "x");
    assert_eq!(mounts(&c, "a"), vec![("./a".to_owned(), "/b".to_owned())]);
}

// ---------------------------------------------------------------------------------------------
// The compose stack's configurations against the binaries' `check`

/// `bootstrap.sh files` into `out`; None (skipped) without its tools outside CI.
fn bootstrap_files(out: &Path, test: &str) -> Option<()> {
    if !(have("bash", "--version", test)
        && have("openssl", "version", test)
        && have("mosquitto_passwd", "-h", test))
    {
        return None;
    }
    let o = Command::new("bash")
        .arg(repo_root().join("deploy/compose/bootstrap.sh"))
        .arg("files")
        .env("OUT", out)
        .output()
        .unwrap();
    assert!(o.status.success(), "bootstrap.sh files: {}", show(&o));
    Some(())
}

/// `config` (TOML text) with every absolute path in a string value replaced by the host file
/// that `service` mounts there; a path that no mount covers fails the test.
fn map_config(config: &str, c: &Compose, service: &str, out: &Path) -> String {
    let dir = repo_root().join("deploy/compose");
    let mut mounts = mounts(c, service);
    // The longest container path first: /etc/shopfloor/certs/ca.pem before /etc/shopfloor.
    mounts.sort_by_key(|(_, container)| std::cmp::Reverse(container.len()));
    let mut lines = Vec::new();
    for line in config.lines() {
        let code = line.trim_start();
        let value = code
            .split_once('=')
            .filter(|_| !code.starts_with('#'))
            .and_then(|(_, v)| v.trim_start().strip_prefix('"'))
            .and_then(|v| v.split_once('"'))
            .map(|(v, _)| v);
        let Some(path) = value.filter(|v| v.starts_with('/')) else {
            lines.push(line.to_owned());
            continue;
        };
        let (host, container) = mounts
            .iter()
            .find(|(_, ct)| path == ct || path.starts_with(&format!("{ct}/")))
            .unwrap_or_else(|| panic!("{service}: `{path}` is not mounted in its container"));
        let host = if from_bootstrap(host) {
            out.join(host.trim_start_matches("./"))
        } else {
            dir.join(host)
        };
        let host = std::fs::canonicalize(&host)
            .unwrap_or_else(|e| panic!("{service}: {}: {e}", host.display()));
        let mapped = format!("{}{}", host.display(), &path[container.len()..]);
        lines.push(line.replacen(path, &mapped, 1));
    }
    lines.join("\n") + "\n"
}

fn check(bin: &Path, config: &Path) -> Output {
    Command::new(bin)
        .arg("check")
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

#[test]
fn compose_configurations_pass_check() {
    let test = "compose_configurations_pass_check";
    let scratch = Scratch::new("check");
    let out = scratch.0.join("compose");
    if bootstrap_files(&out, test).is_none() {
        return;
    }
    let root = repo_root();
    let dir = root.join("deploy/compose");
    let c = compose();
    let gateway = binary("shopfloor-gateway", "shopfloor-gateway");
    let agent = binary("shopfloor-agent", "shopfloor-agent");

    let gw_src = text(&dir.join("gateway.toml"));
    let gw = scratch.0.join("gateway.toml");
    std::fs::write(&gw, map_config(&gw_src, &c, "gateway", &out)).unwrap();
    let o = check(&gateway, &gw);
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains(": ok ("),
        "gateway.toml: {}",
        show(&o)
    );
    let ag_src = text(&dir.join("agent.toml"));
    let ag = scratch.0.join("agent.toml");
    std::fs::write(&ag, map_config(&ag_src, &c, "agent", &out)).unwrap();
    let o = check(&agent, &ag);
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "ok",
        "agent.toml: {}",
        show(&o)
    );

    // The same checks fail when a mounted file is missing, so passing means something.
    let missing = scratch.0.join("missing");
    let canonical = |p: PathBuf| std::fs::canonicalize(p).unwrap().display().to_string();
    let registry = canonical(root.join("configs/registry"));
    assert!(text(&gw).contains(&registry), "{}", text(&gw));
    let broken = text(&gw).replace(&registry, &missing.display().to_string());
    std::fs::write(&gw, broken).unwrap();
    let o = check(&gateway, &gw);
    assert_eq!(
        o.status.code(),
        Some(2),
        "gateway without registry: {}",
        show(&o)
    );
    let ca = canonical(out.join("certs/ca.pem"));
    assert!(text(&ag).contains(&ca), "{}", text(&ag));
    let broken = text(&ag).replace(&ca, &missing.display().to_string());
    std::fs::write(&ag, broken).unwrap();
    let o = check(&agent, &ag);
    assert_eq!(
        o.status.code(),
        Some(2),
        "agent without CA file: {}",
        show(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("mqtt.tls.ca_file"),
        "{}",
        show(&o)
    );
}

/// `key = "value"` of the first line starting with `key` (line-based; simple TOML only).
fn toml_value(src: &str, key: &str) -> String {
    src.lines()
        .map(str::trim)
        .find_map(|l| {
            l.strip_prefix(key)
                .map(str::trim_start)
                .and_then(|r| r.strip_prefix('='))
        })
        .map(|v| unquote(v.split(" #").next().unwrap()))
        .unwrap_or_else(|| panic!("no `{key}`"))
}

#[test]
fn bootstrap_writes_matching_credentials_and_is_idempotent() {
    let test = "bootstrap_writes_matching_credentials_and_is_idempotent";
    let scratch = Scratch::new("bootstrap");
    let out = scratch.0.join("compose");
    if bootstrap_files(&out, test).is_none() {
        return;
    }
    let dir = repo_root().join("deploy/compose");
    let gw = text(&dir.join("gateway.toml"));
    let agent = text(&dir.join("agent.toml"));
    let secret = |n: &str| text(&out.join("secrets").join(n));

    // Mosquitto knows the user names the configurations log in with, and the ACL names the
    // gateway's.
    let users: BTreeSet<String> = secret("mosquitto-passwd")
        .lines()
        .filter_map(|l| l.split_once(':').map(|(u, _)| u.to_owned()))
        .collect();
    let gw_user = toml_value(&gw, "username");
    let agent_id = toml_value(&agent, "id");
    assert_eq!(toml_value(&agent, "username"), agent_id);
    assert_eq!(users, BTreeSet::from([gw_user.clone(), agent_id]));
    let acl = text(&repo_root().join("deploy/mosquitto/acl"));
    assert!(
        acl.lines().any(|l| l == format!("user {gw_user}")),
        "acl: user {gw_user}"
    );

    // The pgpass line fits the store URL: host, port, database and user.
    let url = toml_value(&gw, "url");
    let rest = url.strip_prefix("postgres://").unwrap();
    let (user, rest) = rest.split_once('@').unwrap();
    let (hostport, rest) = rest.split_once('/').unwrap();
    let db = rest.split('?').next().unwrap();
    let pgpass = secret("gateway-pgpass");
    let fields: Vec<&str> = pgpass.trim_end().splitn(5, ':').collect();
    assert_eq!(
        fields[..4].join(":"),
        format!("{hostport}:{db}:{user}"),
        "pgpass"
    );
    assert_eq!(fields[4], secret("shopfloor-db-password"));
    assert!(fields[4].len() >= 40, "password length");

    // The broker certificate is signed by the stack's CA and names the service.
    let certs = out.join("certs");
    let o = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(certs.join("ca.pem"))
        .arg(certs.join("mosquitto.crt"))
        .output()
        .unwrap();
    assert!(o.status.success(), "openssl verify: {}", show(&o));
    let o = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(certs.join("mosquitto.crt"))
        .output()
        .unwrap();
    let san = String::from_utf8_lossy(&o.stdout);
    assert!(san.contains("DNS:mosquitto"), "{}", show(&o));
    assert!(
        toml_value(&gw, "url").contains("@postgres:") && gw.contains("\"mqtts://mosquitto:8883\""),
        "gateway.toml dials the compose services"
    );

    // Secrets are private; a second run keeps every file.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for e in std::fs::read_dir(out.join("secrets")).unwrap().flatten() {
            let mode = e.metadata().unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", e.path().display());
        }
    }
    let before = secret("agent-mqtt-password") + &text(&certs.join("ca.pem"));
    bootstrap_files(&out, test).unwrap();
    assert_eq!(
        before,
        secret("agent-mqtt-password") + &text(&certs.join("ca.pem"))
    );
}

/// `127.0.0.1:<port>` listeners in plant.toml and the ports agent.toml dials.
#[test]
fn the_plant_serves_what_the_agent_reads() {
    let dir = repo_root().join("deploy/compose");
    let plant = text(&dir.join("plant.toml"));
    let agent = text(&dir.join("agent.toml"));
    let code = |src: &str| -> Vec<String> {
        src.lines()
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.starts_with('#'))
            .collect()
    };
    let listens: BTreeSet<String> = code(&plant)
        .iter()
        .filter_map(|l| l.strip_prefix("listen = \"127.0.0.1:"))
        .map(|p| p.trim_end_matches('"').to_owned())
        .collect();
    let mut dialled = BTreeSet::new();
    for l in code(&agent) {
        if let Some(p) = l.strip_prefix("port = ") {
            dialled.insert(p.split_whitespace().next().unwrap().to_owned());
        }
        if let Some(e) = l.strip_prefix("endpoint = \"opc.tcp://127.0.0.1:") {
            dialled.insert(e.split('/').next().unwrap().to_owned());
        }
        assert!(
            !l.starts_with("host =") || l.starts_with("host = \"127.0.0.1\""),
            "agent.toml: {l} (the plant shares the agent's network namespace)"
        );
        assert!(
            !l.starts_with("serial ="),
            "agent.toml: {l}: no serial line in containers"
        );
    }
    assert_eq!(listens, dialled, "plant.toml listeners vs agent.toml");
    // Every device the agent reads is one the plant simulates (id = …/<plant device name>).
    let plant_devices: BTreeSet<String> = code(&plant)
        .iter()
        .filter_map(|l| l.strip_prefix("name = \""))
        .map(|n| n.trim_end_matches('"').to_owned())
        .collect();
    for l in code(&agent) {
        if let Some(id) = l.strip_prefix("id = \"p1/") {
            let name = id.trim_end_matches('"').rsplit('/').next().unwrap();
            assert!(
                plant_devices.contains(name),
                "agent device {id} is not in plant.toml"
            );
        }
    }
    let c = compose();
    assert_eq!(
        c.services["plant"]
            .scalars
            .get("network_mode")
            .map(String::as_str),
        Some("service:agent")
    );
}

#[test]
fn the_plant_scenario_starts() {
    // plant.toml with free ports, served by the real simulator until it lists its devices.
    let scratch = Scratch::new("plant");
    let dir = repo_root().join("deploy/compose");
    let mut plant = String::new();
    for l in text(&dir.join("plant.toml")).lines() {
        if l.starts_with("listen = \"127.0.0.1:") {
            plant.push_str("listen = \"127.0.0.1:0\"\n");
        } else {
            plant.push_str(l);
            plant.push('\n');
        }
    }
    let file = scratch.0.join("plant.toml");
    std::fs::write(&file, &plant).unwrap();
    let sim = binary("shopfloor-sim", "shopfloor-sim");
    let log = scratch.0.join("sim.out");
    let mut child = Command::new(sim)
        .arg("--scenario")
        .arg(&file)
        .arg("--pki-dir")
        .arg(scratch.0.join("pki"))
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let seen = loop {
        let out = std::fs::read_to_string(&log).unwrap_or_default();
        if out.contains("Ctrl-C stops.") {
            break out;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("shopfloor-sim exited ({status}): {out}");
        }
        assert!(start.elapsed() < Duration::from_secs(300), "sim: {out}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    for device in [
        "cnc-01",
        "cnc-02",
        "cnc-03",
        "meter-line1",
        "meter-main",
        "water-line1",
        "mt-01",
        "robot-01",
    ] {
        assert!(
            seen.contains(&format!("    {device} ")),
            "{device} not served:\n{seen}"
        );
    }
    assert!(seen.contains("simulated time ×1"), "{seen}");
}

// ---------------------------------------------------------------------------------------------
// Grafana dashboards

/// How a registered metric is exposed (prometheus-client's OpenMetrics text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A Rust string literal at the start of `s` (after white space): its text and the rest.
fn string_literal(s: &str) -> Option<(String, &str)> {
    let s = s.trim_start().strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?.1),
            '"' => return Some((out, &s[i + 1..])),
            c => out.push(c),
        }
    }
    None
}

/// The type written for `ident` in `src`: `let ident = <type>…;` or `pub ident: <type>,`.
fn kind_of(src: &str, ident: &str) -> Kind {
    let ty = src
        .split_once(&format!("let {ident} ="))
        .map(|(_, r)| r.split(';').next().unwrap())
        .or_else(|| {
            // A field of `pub struct Metrics { … }`.
            let fields = src
                .split_once("pub struct Metrics {")?
                .1
                .split("\n}")
                .next()?;
            fields
                .split_once(&format!("pub {ident}: "))
                .map(|(_, r)| r.lines().next().unwrap())
        })
        .unwrap_or_else(|| panic!("no declaration of {ident}"));
    if ty.contains("Histogram") {
        Kind::Histogram
    } else if ty.contains("Counter") {
        Kind::Counter
    } else if ty.contains("Gauge") {
        Kind::Gauge
    } else {
        panic!("{ident}: unknown metric type {ty}")
    }
}

/// Families registered in a metrics.rs: `register("name", "help", <ident>.clone())`, with the
/// registry's prefix (`Registry::with_prefix("…")`, joined with `_`).
fn registered(src: &str) -> BTreeMap<String, Kind> {
    let prefix = src
        .split("Registry::with_prefix(")
        .nth(1)
        .and_then(string_literal)
        .map(|(p, _)| format!("{p}_"))
        .unwrap_or_default();
    let mut out = BTreeMap::new();
    for call in src.split(".register(").skip(1) {
        let (name, rest) = string_literal(call).expect("metric name literal");
        let (_help, rest) =
            string_literal(rest.trim_start().strip_prefix(',').unwrap()).expect("help literal");
        let expr = rest.trim_start().strip_prefix(',').unwrap().trim_start();
        let ident = expr
            .split(".clone()")
            .next()
            .unwrap()
            .trim_start_matches("m.");
        out.insert(format!("{prefix}{name}"), kind_of(src, ident));
    }
    assert!(!out.is_empty(), "no metrics registered");
    out
}

/// Sample names as exposed: counters get `_total`, histograms `_bucket`, `_sum` and `_count`.
fn exposed(families: &BTreeMap<String, Kind>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (name, kind) in families {
        match kind {
            Kind::Counter => {
                out.insert(format!("{name}_total"));
            }
            Kind::Gauge => {
                out.insert(name.clone());
            }
            Kind::Histogram => {
                for s in ["_bucket", "_sum", "_count"] {
                    out.insert(format!("{name}{s}"));
                }
            }
        }
    }
    out
}

/// Every metric the gateway and the agent expose.
fn known_metrics() -> BTreeSet<String> {
    let root = repo_root();
    let gw_src = text(&root.join("gateway/src/metrics.rs"));
    let gateway = registered(&gw_src);
    // The documented table at the top of gateway/src/metrics.rs lists the same families.
    let documented: BTreeSet<String> = gw_src
        .lines()
        .filter_map(|l| l.strip_prefix("//! | `"))
        .filter_map(|l| l.split_once('`').map(|(n, _)| n.to_owned()))
        .collect();
    let families: BTreeSet<String> = gateway
        .iter()
        .map(|(n, k)| match k {
            Kind::Counter => format!("{n}_total"),
            _ => n.clone(),
        })
        .collect();
    assert_eq!(
        documented, families,
        "gateway/src/metrics.rs: table vs registry"
    );
    let agent = registered(&text(&root.join("agent/src/metrics.rs")));
    assert!(
        agent.keys().all(|n| n.starts_with("shopfloor_agent_")),
        "{agent:?}"
    );
    let mut all = exposed(&gateway);
    all.extend(exposed(&agent));
    all
}

/// Keywords followed by a list of label names.
const GROUPING: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

const PROMQL_WORDS: [&str; 14] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "and",
    "or",
    "unless",
    "le",
    "inf",
    "nan",
];

/// Metric names in a PromQL expression: identifiers outside label matchers `{…}`, strings,
/// ranges `[…]` and `by (…)` / `without (…)` lists, that are not functions or keywords.
fn promql_metrics(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b: Vec<char> = expr.chars().collect();
    let mut i = 0;
    let mut grouping = false;
    while i < b.len() {
        let c = b[i];
        let closing = match c {
            '{' => Some('}'),
            '[' => Some(']'),
            '"' => Some('"'),
            '(' if grouping => Some(')'),
            _ => None,
        };
        if let Some(close) = closing {
            grouping = false;
            i += 1;
            while i < b.len() && b[i] != close {
                i += 1;
            }
            i += 1;
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '_' || b[i] == ':') {
                i += 1;
            }
            let word: String = b[start..i].iter().collect();
            let rest: String = b[i..].iter().collect();
            let rest = rest.trim_start();
            // A call, or an aggregation with its grouping first (`sum by (le) (…)`).
            let call = rest.starts_with('(')
                || rest.starts_with("by ")
                || rest.starts_with("by(")
                || rest.starts_with("without");
            if GROUPING.contains(&word.as_str()) {
                grouping = true;
            } else if !call && !PROMQL_WORDS.contains(&word.as_str()) {
                out.push(word);
            }
            continue;
        }
        if c.is_ascii_digit() {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '.') {
                i += 1;
            }
            continue;
        }
        i += 1;
    }
    out
}

/// Every `expr` of every panel (rows included) and every query variable's definition.
fn queries(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    fn walk(panels: &serde_json::Value, out: &mut Vec<(String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("").to_owned();
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{title}: no expr"));
                out.push((title.clone(), expr.to_owned()));
            }
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    for v in dashboard["templating"]["list"].as_array().unwrap() {
        if v["type"] == "query" {
            let q = v["definition"].as_str().unwrap();
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.rsplit_once(','))
                .map(|(m, _)| m)
                .unwrap_or_else(|| panic!("variable {}: {q}", v["name"]));
            out.push((format!("variable {}", v["name"]), inner.to_owned()));
        }
    }
    out
}

/// The level of the entities an entity matcher selects (the dashboards' variables).
fn level_of(matcher: &str) -> Level {
    match matcher {
        "$park" => Level::Park,
        "$park/[^/]+" | "$enterprise" => Level::Enterprise,
        "$enterprise/[^/]+" => Level::Workshop,
        m => panic!("entity matcher {m:?}: add its level to level_of"),
    }
}

/// The value of label `name` in every matcher of `expr` (`name="v"` or `name=~"v"`).
fn label_values(expr: &str, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in expr.split(&format!("{name}=")).skip(1) {
        let v = part.trim_start_matches('~');
        if let Some((value, _)) = string_literal(v) {
            out.push(value);
        }
    }
    out
}

fn dashboards() -> Vec<(String, serde_json::Value)> {
    let dir = repo_root().join("deploy/grafana/dashboards");
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let v: serde_json::Value =
                serde_json::from_str(&text(&p)).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    let names: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["enterprise.json", "park.json"]);
    out
}

#[test]
fn dashboards_use_only_exported_metrics_and_catalog_ids() {
    let known = known_metrics();
    let carriers: BTreeSet<String> = catalog::carrier_ids("gbt2589-2020")
        .into_iter()
        .map(|c| c.id)
        .collect();
    let mut uids = BTreeSet::new();
    for (file, d) in dashboards() {
        let title = d["title"].as_str().unwrap();
        assert!(
            title.contains(" / ") && !title.is_ascii(),
            "{file}: title in Chinese and English: {title}"
        );
        assert!(
            uids.insert(d["uid"].as_str().unwrap().to_owned()),
            "{file}: uid"
        );
        let vars: Vec<&str> = d["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert!(vars.contains(&"datasource"), "{file}: datasource variable");
        let mut ids = BTreeSet::new();
        let mut metrics_seen = 0;
        let qs = queries(&d);
        assert!(qs.len() >= 10, "{file}: {} queries", qs.len());
        for (panel, expr) in qs {
            let metrics = promql_metrics(&expr);
            assert!(!metrics.is_empty(), "{file}: {panel}: no metric in {expr}");
            for m in &metrics {
                assert!(
                    known.contains(m),
                    "{file}: {panel}: `{m}` is not exported by the gateway or the agent ({expr})"
                );
                metrics_seen += 1;
            }
            if !metrics.iter().any(|m| m.starts_with("shopfloor_indicator")) {
                continue;
            }
            let entities = label_values(&expr, "entity");
            let indicators = label_values(&expr, "indicator");
            if panel.starts_with("variable ") {
                continue;
            }
            assert_eq!(
                entities.len(),
                1,
                "{file}: {panel}: one entity matcher: {expr}"
            );
            assert_eq!(
                indicators.len(),
                1,
                "{file}: {panel}: one indicator matcher: {expr}"
            );
            let level = level_of(&entities[0]);
            let fixed: BTreeSet<&str> = catalog::fixed_ids_for(level).map(|d| d.id).collect();
            for id in indicators[0].split('|') {
                assert!(
                    fixed.contains(id) || carriers.contains(id),
                    "{file}: {panel}: `{id}` is not a catalog id of level {level:?}"
                );
                ids.insert(id.to_owned());
            }
            for v in &vars {
                let used = format!("${v}");
                assert!(
                    !expr.contains(&format!("{used}_")),
                    "{file}: {panel}: ambiguous {used}"
                );
            }
        }
        assert!(metrics_seen > 0 && !ids.is_empty(), "{file}");
        eprintln!("{file}: {} indicator ids, all in the catalog", ids.len());
    }
}

#[test]
fn dashboard_checks_can_fail() {
    let known = known_metrics();
    // A misspelt family, a histogram without its suffix, an unknown id: all caught.
    assert_eq!(
        promql_metrics("rate(shopfloor_gateway_batches[5m])"),
        ["shopfloor_gateway_batches"]
    );
    assert!(!known.contains("shopfloor_gateway_batches"));
    assert!(!known.contains("shopfloor_gateway_ingest_lag_seconds"));
    assert!(known.contains("shopfloor_gateway_ingest_lag_seconds_bucket"));
    assert!(known.contains("shopfloor_agent_outbox_batches"));
    assert!(known.contains("shopfloor_agent_batches_acked_total"));
    assert_eq!(
        promql_metrics(
            "histogram_quantile(0.95, sum by (le, job) (rate(a_bucket{x=\"y z\"}[$__rate_interval]))) / on (job) b_total > 0"
        ),
        ["a_bucket", "b_total"]
    );
    assert_eq!(
        label_values(
            r#"max by (entity) (shopfloor_indicator{indicator=~"a|b", entity="$park"})"#,
            "indicator"
        ),
        ["a|b"]
    );
    assert!(catalog::fixed_ids_for(Level::Workshop).all(|d| d.id != "energy_tce"));
}

#[test]
fn grafana_provisioning_matches_compose() {
    let root = repo_root();
    let c = compose();
    let grafana = &c.services["grafana"];
    let m = mounts(&c, "grafana");
    let container_of = |host: &str| {
        m.iter()
            .find(|(h, _)| h == host)
            .map(|(_, ct)| ct.clone())
            .unwrap_or_else(|| panic!("grafana does not mount {host}"))
    };
    let dash_dir = container_of("../grafana/dashboards");
    let prov = text(&root.join("deploy/grafana/provisioning/dashboards/shopfloor.yaml"));
    let path = prov
        .lines()
        .find_map(|l| l.trim().strip_prefix("path: "))
        .unwrap();
    assert_eq!(path, dash_dir, "dashboard provider path vs compose mount");
    assert_eq!(
        container_of("../grafana/provisioning/dashboards"),
        "/etc/grafana/provisioning/dashboards"
    );
    assert_eq!(
        container_of("../grafana/provisioning/datasources"),
        "/etc/grafana/provisioning/datasources"
    );
    let home = &grafana.maps["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"];
    let file = home.strip_prefix(&format!("{dash_dir}/")).unwrap();
    assert!(
        root.join("deploy/grafana/dashboards").join(file).is_file(),
        "{home}"
    );
    // The data source is the compose Prometheus, whose configuration scrapes both services.
    let ds = text(&root.join("deploy/grafana/provisioning/datasources/shopfloor.yaml"));
    assert!(ds.contains("url: http://prometheus:9090"), "{ds}");
    let prom = text(&root.join("deploy/compose/prometheus.yml"));
    let gw_listen = toml_value(&text(&root.join("deploy/compose/gateway.toml")), "listen");
    let agent_listen = toml_value(&text(&root.join("deploy/compose/agent.toml")), "listen");
    let port = |l: &str| l.rsplit(':').next().unwrap().to_owned();
    assert!(
        prom.contains(&format!("\"gateway:{}\"", port(&gw_listen))),
        "{prom}"
    );
    assert!(
        prom.contains(&format!("\"agent:{}\"", port(&agent_listen))),
        "{prom}"
    );
}
