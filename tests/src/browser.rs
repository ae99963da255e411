//! A small Chrome DevTools Protocol (CDP) client for the dashboard's browser tests.
//!
//! [`Browser::launch`] starts a headless Chromium (Debian's `/usr/bin/chromium` by default, see
//! [`Browser::find`]) with a fresh temporary profile, connects to its DevTools websocket, opens
//! one page and attaches to it with a flattened CDP session. Tests then drive that page
//! ([`Browser::goto`], [`Browser::click`], [`Browser::type_into`], [`Browser::eval`],
//! [`Browser::wait_for`], [`Browser::screenshot`]) and check [`Browser::take_errors`], which
//! collects everything that went wrong on the page: `console.error`/`console.assert`, uncaught
//! exceptions, browser log errors (CSP violations, ...) and failed or `>= 400` requests.
//!
//! # How it works
//! One websocket connection to the browser endpoint, driven by one tokio task that owns it
//! (tungstenite over a non-blocking socket). The task routes command replies by id to the
//! waiting caller and turns page events into error/warning lists and a bounded event log as
//! they arrive, so nothing is lost between calls. Every command has a timeout
//! ([`COMMAND_TIMEOUT`]) whose error names the CDP method.
//!
//! The Chromium process is killed and its profile directory removed when the [`Browser`] is
//! dropped, including while a failing test unwinds. Chromium's helper processes (zygote,
//! renderers, GPU, network service, crashpad) exit on their own a few hundred milliseconds
//! after the browser process; the drop waits for them (up to 5 s, found through `/proc` by the
//! profile path on their command lines, then `kill -KILL`) before removing the profile, which
//! a late helper could otherwise write into again.
//!
//! JavaScript dialogs (`alert`, `confirm`, `prompt`, `beforeunload`) are accepted at once,
//! since an open dialog blocks the page; each is noted in [`Browser::take_warnings`].
//!
//! # Flags, and why
//! - `--headless`: Chromium's (new) headless mode; no display needed.
//! - `--no-sandbox`: required when running as root (CI containers); the pages are our own.
//! - `--disable-gpu`, `--disable-dev-shm-usage`: software rendering, and no reliance on a
//!   large `/dev/shm` (containers often have 64 MB).
//! - `--disable-quic`, `--disable-background-networking`, `--disable-component-update`,
//!   `--disable-sync`, `--disable-default-apps`, `--disable-extensions`,
//!   `--disable-domain-reliability`, `--disable-client-side-phishing-detection`,
//!   `--no-pings`, `--no-first-run`, `--no-default-browser-check`, `--no-proxy-server`: the
//!   test machines have no outside network; the browser must only talk to the test's server.
//! - `--disable-breakpad`, `--disable-crash-reporter`: no crash uploads.
//! - `--disable-background-timer-throttling`, `--disable-renderer-backgrounding`,
//!   `--disable-backgrounding-occluded-windows`: timers run at full speed in a headless page.
//! - `--mute-audio`, `--password-store=basic`: no sound device, no desktop keyring.
//! - `--hide-scrollbars`, `--force-color-profile=srgb`, `--window-size=1440,900`: stable
//!   screenshots. The page's viewport is also set to 1440×900 ([`Browser::set_viewport`]).
//! - `--user-data-dir=<fresh temp dir>`: no state shared between tests or with a user's
//!   profile. `TMPDIR`, `XDG_CONFIG_HOME` and `XDG_CACHE_HOME` point inside it too: Chromium
//!   otherwise leaves `org.chromium.Chromium.*` socket dirs in `/tmp` when killed and a
//!   `Crash Reports` dir in `~/.config/chromium`.
//! - `--remote-debugging-port=0`: the OS picks a free port, so parallel launches never clash;
//!   the port is read from the `DevTools listening on ws://...` line on stderr.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message, WebSocket};

/// How long one CDP command may take before it fails.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long Chromium may take to print its DevTools address.
pub const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`Browser::goto`] waits for the page's load event.
pub const NAVIGATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Viewport set at launch (matches `--window-size`).
const DEFAULT_VIEWPORT: (u32, u32) = (1440, 900);
/// Page/Runtime/Target events kept for waiters (diagnostics are kept separately, unbounded).
const EVENT_LOG_LEN: usize = 2000;
/// Lines of Chromium's stderr kept for error messages.
const STDERR_TAIL_LEN: usize = 40;
/// Websocket message limit: full-page screenshots arrive as one base64 message.
const MAX_MESSAGE: usize = 512 << 20;

const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--no-pings",
    "--no-proxy-server",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-breakpad",
    "--disable-crash-reporter",
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
    "--hide-scrollbars",
    "--mute-audio",
    "--force-color-profile=srgb",
    "--password-store=basic",
    "--remote-debugging-port=0",
    "--window-size=1440,900",
];

/// True when browser tests must run: `SHOPFLOOR_TEST_BROWSER=required` or `CI=true`. Tests
/// then fail when Chromium is missing instead of skipping.
pub fn required() -> bool {
    std::env::var("SHOPFLOOR_TEST_BROWSER").is_ok_and(|v| v == "required")
        || std::env::var("CI").is_ok_and(|v| v == "true")
}

/// For a test's first line: `Some(path)` when Chromium is there; otherwise prints
/// `skipped <test>: chromium not found (...)` to stderr (uncaptured, so it shows in a normal
/// `cargo test` run) and returns `None`, or panics when [`required`] says browser tests must
/// run.
pub fn chromium_or_skip(test: &str) -> Option<PathBuf> {
    match Browser::find() {
        Ok(path) => Some(path),
        Err(e) if required() => panic!(
            "{test}: chromium is required (SHOPFLOOR_TEST_BROWSER=required or CI=true) but {e}"
        ),
        Err(e) => {
            // Straight to stderr, not `eprintln!`: the test harness would capture that and
            // show it only for failing tests.
            let _ = writeln!(io::stderr(), "skipped {test}: chromium not found ({e})");
            None
        }
    }
}

/// A headless Chromium with one page attached. See the module docs.
pub struct Browser {
    conn: Connection,
    session: String,
    target_id: String,
    process: Process,
}

impl fmt::Debug for Browser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Browser")
            .field("pid", &self.pid())
            .field("profile", &self.process.profile)
            .field("target_id", &self.target_id)
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

impl Browser {
    /// Finds Chromium: `$SHOPFLOOR_CHROMIUM` (if set, it must exist), else `/usr/bin/chromium`,
    /// else `chromium`, `chromium-browser` or `google-chrome` on `PATH`.
    pub fn find() -> Result<PathBuf, String> {
        if let Some(p) = std::env::var_os("SHOPFLOOR_CHROMIUM").filter(|p| !p.is_empty()) {
            let p = PathBuf::from(p);
            return if is_executable(&p) {
                Ok(p)
            } else {
                Err(format!(
                    "SHOPFLOOR_CHROMIUM={} is not an executable file",
                    p.display()
                ))
            };
        }
        let fixed = Path::new("/usr/bin/chromium");
        if is_executable(fixed) {
            return Ok(fixed.to_path_buf());
        }
        const NAMES: [&str; 3] = ["chromium", "chromium-browser", "google-chrome"];
        let path = std::env::var_os("PATH").unwrap_or_default();
        for dir in std::env::split_paths(&path) {
            for name in NAMES {
                let p = dir.join(name);
                if is_executable(&p) {
                    return Ok(p);
                }
            }
        }
        Err(format!(
            "searched $SHOPFLOOR_CHROMIUM (unset), /usr/bin/chromium, and {} on PATH",
            NAMES.join(", ")
        ))
    }

    /// Launches headless Chromium (flags in the module docs), opens a page, attaches to it and
    /// enables the Page, Runtime, Log and Network domains.
    pub async fn launch() -> Result<Browser, String> {
        let exe = Browser::find()?;
        let profile = make_profile_dir()?;
        // Chromium's own temp files (the singleton socket dir, shared memory files with
        // --disable-dev-shm-usage) go inside the profile too, so they go when it goes.
        let tmp = profile.join("tmp");
        if let Err(e) = std::fs::create_dir(&tmp) {
            remove_dir_retrying(&profile);
            return Err(format!("cannot create {}: {e}", tmp.display()));
        }
        let mut cmd = Command::new(&exe);
        cmd.args(FLAGS)
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .env("XDG_CONFIG_HOME", profile.join("xdg-config"))
            .env("XDG_CACHE_HOME", profile.join("xdg-cache"))
            .env("TMPDIR", &tmp)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                remove_dir_retrying(&profile);
                return Err(format!("cannot start {}: {e}", exe.display()));
            }
        };
        let stderr = child.stderr.take();
        // From here on the guard kills the process and removes the profile on every exit path.
        let mut process = Process {
            child: Some(child),
            profile,
            stderr_tail: Arc::new(Mutex::new(VecDeque::new())),
        };
        let ws_url = {
            let Some(stderr) = stderr else {
                return Err("chromium's stderr was not captured".to_owned());
            };
            let (tx, rx) = oneshot::channel();
            let tail = Arc::clone(&process.stderr_tail);
            std::thread::Builder::new()
                .name("chromium-stderr".to_owned())
                .spawn(move || read_stderr(stderr, tx, tail))
                .map_err(|e| format!("cannot start stderr reader thread: {e}"))?;
            match tokio::time::timeout(LAUNCH_TIMEOUT, rx).await {
                Ok(Ok(url)) => url,
                Ok(Err(_)) => {
                    let status = process.wait_briefly();
                    return Err(format!(
                        "chromium ({}) exited ({status}) without printing its DevTools address; \
                         stderr:\n{}",
                        exe.display(),
                        process.stderr_tail()
                    ));
                }
                Err(_) => {
                    return Err(format!(
                        "chromium ({}) printed no DevTools address within {LAUNCH_TIMEOUT:?}; \
                         stderr:\n{}",
                        exe.display(),
                        process.stderr_tail()
                    ));
                }
            }
        };
        let conn = Connection::open(&ws_url).await?;

        let created = conn
            .call(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await?;
        let target_id = str_field(&created, "targetId", "Target.createTarget")?;
        let attached = conn
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
            )
            .await?;
        let session = str_field(&attached, "sessionId", "Target.attachToTarget")?;
        conn.shared.lock().page_session = Some(session.clone());

        // The tab Chromium opened at start-up is not used: close it (best effort).
        if let Ok(targets) = conn.call(None, "Target.getTargets", json!({})).await {
            for t in targets["targetInfos"].as_array().into_iter().flatten() {
                let id = t["targetId"].as_str().unwrap_or_default();
                if t["type"] == "page" && id != target_id {
                    let _ = conn
                        .call(None, "Target.closeTarget", json!({"targetId": id}))
                        .await;
                }
            }
        }

        let mut browser = Browser {
            conn,
            session,
            target_id,
            process,
        };
        for (method, params) in [
            ("Page.enable", json!({})),
            ("Page.setLifecycleEventsEnabled", json!({"enabled": true})),
            ("Runtime.enable", json!({})),
            ("Log.enable", json!({})),
            ("Network.enable", json!({})),
        ] {
            browser.page(method, params).await?;
        }
        browser
            .set_viewport(DEFAULT_VIEWPORT.0, DEFAULT_VIEWPORT.1)
            .await?;
        Ok(browser)
    }

    /// The browser process id (`None` once closed).
    pub fn pid(&self) -> Option<u32> {
        self.process.child.as_ref().map(Child::id)
    }

    /// The temporary profile directory (removed on drop/close).
    pub fn profile_dir(&self) -> &Path {
        &self.process.profile
    }

    /// Sends any CDP command to the page session and returns its result (escape hatch for what
    /// this type does not wrap).
    pub async fn page(&mut self, method: &str, params: Value) -> Result<Value, String> {
        self.conn.call(Some(&self.session), method, params).await
    }

    /// Sets the page's viewport in CSS pixels (device scale factor 1, desktop).
    pub async fn set_viewport(&mut self, width: u32, height: u32) -> Result<(), String> {
        self.page(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await
        .map(drop)
    }

    /// Navigates to `url` and waits for that document's load event ([`NAVIGATION_TIMEOUT`]).
    /// A navigation error (e.g. connection refused) is an `Err`; an HTTP error status is not
    /// (it shows up in [`Browser::take_errors`]).
    pub async fn goto(&mut self, url: &str) -> Result<(), String> {
        let since = self.conn.shared.lock().next_seq;
        let nav = self.page("Page.navigate", json!({"url": url})).await?;
        if let Some(err) = nav["errorText"].as_str().filter(|e| !e.is_empty()) {
            return Err(format!("goto {url}: {err}"));
        }
        // No loaderId: a same-document navigation (e.g. only the #fragment changed).
        let Some(loader) = nav["loaderId"].as_str() else {
            return Ok(());
        };
        self.conn
            .wait_event(since, NAVIGATION_TIMEOUT, |method, p| {
                method == "Page.lifecycleEvent" && p["name"] == "load" && p["loaderId"] == loader
            })
            .await
            .map(drop)
            .map_err(|e| format!("goto {url}: waiting for the load event: {e}"))
    }

    /// Evaluates `js` in the page (promises are awaited) and returns its value as JSON
    /// (`undefined` → `null`; `NaN`, `Infinity`, `-0` and bigints as strings). A thrown
    /// exception is an `Err` with its text.
    pub async fn eval(&mut self, js: &str) -> Result<Value, String> {
        self.eval_within(js, COMMAND_TIMEOUT).await
    }

    async fn eval_within(&mut self, js: &str, timeout: Duration) -> Result<Value, String> {
        let params = json!({
            "expression": js,
            "awaitPromise": true,
            "returnByValue": true,
            "userGesture": true,
        });
        let r = self
            .conn
            .call_within(Some(&self.session), "Runtime.evaluate", params, timeout)
            .await?;
        if let Some(ex) = r.get("exceptionDetails") {
            return Err(format!("eval `{}`: {}", shorten(js), exception_text(ex)));
        }
        let result = &r["result"];
        if let Some(v) = result.get("value") {
            return Ok(v.clone());
        }
        if let Some(u) = result["unserializableValue"].as_str() {
            return Ok(Value::String(u.to_owned()));
        }
        Ok(Value::Null)
    }

    /// Polls the boolean expression `js` every 100 ms until it is `true`, or fails after
    /// `timeout` naming the expression (and its last value or error).
    pub async fn wait_for(&mut self, js: &str, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let last = match self.eval_within(js, left.max(Duration::from_secs(1))).await {
                Ok(Value::Bool(true)) => return Ok(()),
                Ok(v) => format!("last value {v}"),
                // Errors while the page navigates (context destroyed, ...) are retried.
                Err(e) => format!("last error: {e}"),
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "wait_for `{js}`: not true within {timeout:?} ({last})"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100).min(left)).await;
        }
    }

    /// Clicks the first element matching the CSS `selector` like a user: scrolls it into view
    /// and sends real mouse events (move, press, release) to its centre. Fails if nothing
    /// matches, the element has no size, or another element covers its centre.
    pub async fn click(&mut self, selector: &str) -> Result<(), String> {
        let sel = js_string(selector);
        let js = format!(
            r#"(() => {{
  const el = document.querySelector({sel});
  if (!el) return {{error: 'no element matches'}};
  el.scrollIntoView({{block: 'center', inline: 'center', behavior: 'instant'}});
  const r = el.getBoundingClientRect();
  if (r.width === 0 || r.height === 0) return {{error: 'element has no size (hidden?)'}};
  const x = r.left + r.width / 2, y = r.top + r.height / 2;
  const hit = document.elementFromPoint(x, y);
  if (hit && hit !== el && !el.contains(hit)) {{
    const id = hit.id ? '#' + hit.id : '';
    return {{error: 'its centre is covered by <' + hit.tagName.toLowerCase() + id + '>'}};
  }}
  return {{x, y}};
}})()"#
        );
        let at = self.eval(&js).await?;
        if let Some(e) = at["error"].as_str() {
            return Err(format!("click {selector}: {e}"));
        }
        let (Some(x), Some(y)) = (at["x"].as_f64(), at["y"].as_f64()) else {
            return Err(format!("click {selector}: no position ({at})"));
        };
        let events = [
            json!({"type": "mouseMoved", "x": x, "y": y, "button": "none", "buttons": 0}),
            json!({"type": "mousePressed", "x": x, "y": y, "button": "left", "buttons": 1, "clickCount": 1}),
            json!({"type": "mouseReleased", "x": x, "y": y, "button": "left", "buttons": 0, "clickCount": 1}),
        ];
        for e in events {
            self.page("Input.dispatchMouseEvent", e)
                .await
                .map_err(|e| format!("click {selector}: {e}"))?;
        }
        Ok(())
    }

    /// Focuses the first element matching `selector` (an input, textarea or contenteditable),
    /// puts the caret at the end and types `text` there (`Input.insertText`: `beforeinput` and
    /// `input` events fire as for a user). Existing content is kept.
    pub async fn type_into(&mut self, selector: &str, text: &str) -> Result<(), String> {
        let sel = js_string(selector);
        let js = format!(
            r#"(() => {{
  const el = document.querySelector({sel});
  if (!el) return 'no element matches';
  el.scrollIntoView({{block: 'center', inline: 'center', behavior: 'instant'}});
  el.focus();
  if (document.activeElement !== el) return 'element cannot take focus';
  try {{
    if (typeof el.setSelectionRange === 'function' && typeof el.value === 'string') {{
      el.setSelectionRange(el.value.length, el.value.length);
    }}
  }} catch (_) {{ /* inputs like type=number have no selection */ }}
  return null;
}})()"#
        );
        if let Some(e) = self.eval(&js).await?.as_str() {
            return Err(format!("type_into {selector}: {e}"));
        }
        self.page("Input.insertText", json!({"text": text}))
            .await
            .map_err(|e| format!("type_into {selector}: {e}"))
            .map(drop)
    }

    /// Writes a PNG screenshot of the viewport, or of the whole page when `full_page`, to
    /// `path` (parent directories are created).
    pub async fn screenshot(&mut self, path: &Path, full_page: bool) -> Result<(), String> {
        let mut params = json!({"format": "png"});
        if full_page {
            let m = self.page("Page.getLayoutMetrics", json!({})).await?;
            let size = if m["cssContentSize"].is_object() {
                &m["cssContentSize"]
            } else {
                &m["contentSize"]
            };
            let (Some(w), Some(h)) = (size["width"].as_f64(), size["height"].as_f64()) else {
                return Err(format!("screenshot: no content size in {m}"));
            };
            params["captureBeyondViewport"] = json!(true);
            params["clip"] =
                json!({"x": 0, "y": 0, "width": w.ceil(), "height": h.ceil(), "scale": 1});
        }
        let shot = self.page("Page.captureScreenshot", params).await?;
        let data = shot["data"]
            .as_str()
            .ok_or_else(|| "Page.captureScreenshot: no data in reply".to_owned())?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| format!("Page.captureScreenshot: bad base64: {e}"))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("screenshot: cannot create {}: {e}", dir.display()))?;
        }
        std::fs::write(path, png)
            .map_err(|e| format!("screenshot: cannot write {}: {e}", path.display()))
    }

    /// Everything that went wrong on the page since launch or the previous call, one line
    /// each: `console.error`/`console.assert` calls, uncaught exceptions (with URL:line),
    /// browser log errors (e.g. CSP violations), failed requests and responses with a status
    /// of 400 or more (with method and URL), page crashes. Not reported: the `/favicon.ico`
    /// request Chromium makes by itself, requests cancelled by navigating away, and the
    /// browser's own "Failed to load resource" log line (the Network report of the same
    /// request stands).
    pub fn take_errors(&mut self) -> Vec<String> {
        std::mem::take(&mut self.conn.shared.lock().errors)
    }

    /// `console.warn` calls and browser log warnings since launch or the previous call.
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.conn.shared.lock().warnings)
    }

    /// Asks Chromium to quit, waits for it (killing it after 10 s) and removes the profile.
    pub async fn close(mut self) -> Result<(), String> {
        let _ = self
            .conn
            .call_within(None, "Browser.close", json!({}), Duration::from_secs(5))
            .await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match self.process.child.as_mut().map(Child::try_wait) {
                Some(Ok(None)) => tokio::time::sleep(Duration::from_millis(50)).await,
                _ => break,
            }
        }
        self.process.shutdown()
    }
}

/// The Chromium child process and its profile directory; cleans both up on drop.
struct Process {
    child: Option<Child>,
    profile: PathBuf,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
}

impl Process {
    /// Kills (if still running) and reaps the browser, waits for its helper processes to go,
    /// then removes the profile directory.
    fn shutdown(&mut self) -> Result<(), String> {
        if let Some(mut child) = self.child.take() {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        if self.profile.as_os_str().is_empty() {
            return Ok(());
        }
        let profile = std::mem::take(&mut self.profile);
        // Helpers still running could write into (or recreate) the profile after removal.
        let left = helpers::wait_gone(&profile, Duration::from_secs(5));
        let removed = remove_dir_retrying(&profile);
        match (removed, left.is_empty()) {
            (true, true) => Ok(()),
            (true, false) => Err(format!(
                "chromium helper processes {left:?} still running after the browser exited"
            )),
            (false, _) => Err(format!(
                "cannot remove chromium profile {}",
                profile.display()
            )),
        }
    }

    /// After stderr closed: the exit status, waiting up to 2 s for it.
    fn wait_briefly(&mut self) -> String {
        let Some(child) = self.child.as_mut() else {
            return "already reaped".to_owned();
        };
        for _ in 0..40 {
            match child.try_wait() {
                Ok(Some(status)) => return status.to_string(),
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => return e.to_string(),
            }
        }
        "still running".to_owned()
    }

    fn stderr_tail(&self) -> String {
        let tail = self
            .stderr_tail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tail.iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// Reads Chromium's stderr: sends the DevTools websocket URL once, keeps the last lines, and
/// keeps draining so the pipe never fills up.
fn read_stderr(stderr: impl Read, tx: oneshot::Sender<String>, tail: Arc<Mutex<VecDeque<String>>>) {
    let mut tx = Some(tx);
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        if let Some(url) = line
            .strip_prefix("DevTools listening on ")
            .map(str::trim)
            .filter(|u| u.starts_with("ws://"))
            && let Some(tx) = tx.take()
        {
            let _ = tx.send(url.to_owned());
        }
        let mut t = tail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if t.len() == STDERR_TAIL_LEN {
            t.pop_front();
        }
        t.push_back(line);
    }
    // Dropping an unsent `tx` tells the launcher that Chromium exited.
}

/// Chromium's helper processes (zygote, renderers, GPU, utilities, crashpad) of one profile,
/// found by the profile path on their command lines (Linux `/proc`; elsewhere none are seen).
mod helpers {
    use std::path::Path;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    /// Live (not zombie) processes whose command line names `profile`.
    fn live(profile: &Path) -> Vec<u32> {
        let p = profile.to_string_lossy();
        let flag = format!("--user-data-dir={p}");
        let inside = format!("{p}/");
        let mut found = Vec::new();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return found;
        };
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
                continue;
            };
            let names = cmdline.split(|b| *b == 0).any(|arg| {
                let arg = String::from_utf8_lossy(arg);
                arg == flag || arg.contains(&inside)
            });
            if names && !zombie(pid) {
                found.push(pid);
            }
        }
        found
    }

    fn zombie(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
            // "pid (comm) S ...": the state follows the last ')'.
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
        })
    }

    /// Waits up to `timeout` for the profile's helpers to exit on their own (they do once the
    /// browser process is gone), then sends SIGKILL to any left (std has no `kill(2)`: the
    /// `kill` command, best effort). Returns those still alive after that.
    pub(super) fn wait_gone(profile: &Path, timeout: Duration) -> Vec<u32> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = live(profile);
            if left.is_empty() {
                return left;
            }
            if Instant::now() >= deadline {
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .args(left.iter().map(u32::to_string))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                std::thread::sleep(Duration::from_millis(200));
                return live(profile);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn is_executable(p: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(p) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        meta.is_file() && meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        meta.is_file()
    }
}

fn make_profile_dir() -> Result<PathBuf, String> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let base = std::env::temp_dir();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let mut last_err = None;
    for _ in 0..16 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!(
            "shopfloor-chromium-{}-{n}-{nanos:x}",
            std::process::id()
        ));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
            Err(e) => {
                return Err(format!("cannot create profile dir {}: {e}", dir.display()));
            }
        }
    }
    Err(format!(
        "cannot create a profile dir in {}: {last_err:?}",
        base.display()
    ))
}

/// Removes a directory tree, retrying briefly: Chromium's helper processes may still be
/// writing into it for a moment after the browser process died. True when it is gone.
fn remove_dir_retrying(dir: &Path) -> bool {
    for attempt in 0..20 {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => return true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return true,
            Err(_) if attempt < 19 => std::thread::sleep(Duration::from_millis(50)),
            Err(_) => {}
        }
    }
    !dir.exists()
}

fn str_field(v: &Value, field: &str, method: &str) -> Result<String, String> {
    v[field]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("{method}: no {field} in reply {v}"))
}

/// A JS string literal for `s` (JSON strings are valid JS strings).
fn js_string(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

fn shorten(js: &str) -> String {
    let one_line = js.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 80 {
        format!("{}…", one_line.chars().take(80).collect::<String>())
    } else {
        one_line
    }
}

// ---------------------------------------------------------------------------------------------
// Connection: one websocket, one I/O task.

struct Connection {
    out: mpsc::UnboundedSender<String>,
    shared: Arc<Shared>,
    next_id: AtomicU64,
    io_task: JoinHandle<()>,
}

struct Shared {
    state: Mutex<State>,
    /// Woken on every stored event and when the connection closes.
    notify: Notify,
}

#[derive(Default)]
struct State {
    pending: HashMap<u64, oneshot::Sender<Result<Value, String>>>,
    /// Recent Page/Runtime/Target events of the page session: (sequence number, method, params).
    events: VecDeque<(u64, String, Value)>,
    next_seq: u64,
    page_session: Option<String>,
    errors: Vec<String>,
    warnings: Vec<String>,
    /// In-flight requests of the page by requestId.
    requests: HashMap<String, Request>,
    /// Why the connection ended, once it has.
    closed: Option<String>,
    /// Commands sent by the I/O task itself (dialog answers).
    auto_replies: u64,
}

struct Request {
    method: String,
    url: String,
    /// Chromium's own `/favicon.ico` request: not reported.
    implicit: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Handles one message from Chromium. Returns a command to send back at once, if any
    /// (accepting a JavaScript dialog, which would otherwise block the page).
    fn dispatch(&self, text: &str) -> Option<String> {
        let msg = serde_json::from_str::<Value>(text).ok()?;
        if let Some(id) = msg["id"].as_u64() {
            let tx = self.lock().pending.remove(&id)?;
            let result = match msg.get("error") {
                Some(e) => {
                    let mut text = format!(
                        "{} (code {})",
                        e["message"].as_str().unwrap_or("error"),
                        e["code"]
                    );
                    if let Some(d) = e["data"].as_str() {
                        text.push_str(": ");
                        text.push_str(d);
                    }
                    Err(text)
                }
                None => Ok(msg.get("result").cloned().unwrap_or(Value::Null)),
            };
            let _ = tx.send(result);
            return None;
        }
        let method = msg["method"].as_str()?;
        let params = &msg["params"];
        let mut st = self.lock();
        let session = msg["sessionId"].as_str();
        if session.is_none() || session != st.page_session.as_deref() {
            if method == "Target.targetCrashed" {
                st.errors.push(format!(
                    "target crashed: {} (status {})",
                    params["targetId"], params["status"]
                ));
            }
            return None;
        }
        st.record(method, params);
        let reply = (method == "Page.javascriptDialogOpening").then(|| {
            st.warnings.push(format!(
                "{} dialog accepted: {}",
                params["type"].as_str().unwrap_or("javascript"),
                params["message"].as_str().unwrap_or_default()
            ));
            st.auto_replies += 1;
            // Chromium takes only 32-bit ids. Counted down from the top, these never meet the
            // callers' ids, counted up from 1.
            let id = i32::MAX as u64 - st.auto_replies;
            json!({
                "id": id,
                "sessionId": session,
                "method": "Page.handleJavaScriptDialog",
                "params": {
                    "accept": true,
                    "promptText": params["defaultPrompt"].as_str().unwrap_or_default(),
                },
            })
            .to_string()
        });
        if method.starts_with("Page.")
            || method.starts_with("Runtime.execution")
            || method.starts_with("Target.")
            || method.starts_with("Inspector.")
        {
            let seq = st.next_seq;
            st.next_seq += 1;
            if st.events.len() == EVENT_LOG_LEN {
                st.events.pop_front();
            }
            st.events
                .push_back((seq, method.to_owned(), params.clone()));
            drop(st);
            self.notify.notify_waiters();
        }
        reply
    }

    fn close(&self, reason: String) {
        let mut st = self.lock();
        st.closed.get_or_insert(reason);
        // Dropping the senders wakes every caller with the close reason.
        st.pending.clear();
        drop(st);
        self.notify.notify_waiters();
    }
}

impl State {
    /// Turns diagnostic events into error and warning lines.
    fn record(&mut self, method: &str, p: &Value) {
        match method {
            "Runtime.consoleAPICalled" => {
                let kind = p["type"].as_str().unwrap_or_default();
                let line = || {
                    let args = p["args"]
                        .as_array()
                        .map(|a| a.iter().map(remote_text).collect::<Vec<_>>().join(" "))
                        .unwrap_or_default();
                    let at = p["stackTrace"]["callFrames"]
                        .get(0)
                        .map(|f| format!(" ({})", location(f)))
                        .unwrap_or_default();
                    let name = if kind == "warning" { "warn" } else { kind };
                    format!("console.{name}: {args}{at}")
                };
                match kind {
                    "error" | "assert" => self.errors.push(line()),
                    "warning" => self.warnings.push(line()),
                    _ => {}
                }
            }
            "Runtime.exceptionThrown" => {
                let d = &p["exceptionDetails"];
                let at = if d["url"].as_str().is_some_and(|u| !u.is_empty()) {
                    format!(" ({})", location(d))
                } else {
                    d["stackTrace"]["callFrames"]
                        .get(0)
                        .map(|f| format!(" ({})", location(f)))
                        .unwrap_or_default()
                };
                self.errors
                    .push(format!("uncaught exception: {}{at}", exception_text(d)));
            }
            "Log.entryAdded" => {
                let e = &p["entry"];
                let source = e["source"].as_str().unwrap_or_default();
                // Network problems are reported from the Network domain (with the method).
                if source == "network" && e["url"].is_string() {
                    return;
                }
                let url = e["url"]
                    .as_str()
                    .filter(|u| !u.is_empty())
                    .map(|u| format!(" ({u})"))
                    .unwrap_or_default();
                let line = format!(
                    "log.{source}: {}{url}",
                    e["text"].as_str().unwrap_or_default()
                );
                match e["level"].as_str() {
                    Some("error") => self.errors.push(line),
                    Some("warning") => self.warnings.push(line),
                    _ => {}
                }
            }
            "Network.requestWillBeSent" => {
                if let Some(id) = p["requestId"].as_str() {
                    let r = &p["request"];
                    let url = r["url"].as_str().unwrap_or_default().to_owned();
                    // Chromium asks for /favicon.ico by itself when a page names no icon.
                    let implicit = p["type"] == "Other"
                        && p["initiator"]["type"] == "other"
                        && url_path(&url) == "/favicon.ico";
                    self.requests.insert(
                        id.to_owned(),
                        Request {
                            method: r["method"].as_str().unwrap_or("GET").to_owned(),
                            url,
                            implicit,
                        },
                    );
                }
            }
            "Network.responseReceived" => {
                let r = &p["response"];
                let status = r["status"].as_f64().unwrap_or_default();
                let req = p["requestId"].as_str().and_then(|id| self.requests.get(id));
                if status >= 400.0 && !req.is_some_and(|r| r.implicit) {
                    let method = req.map_or("GET", |r| r.method.as_str());
                    self.errors.push(format!(
                        "HTTP {status} {}: {method} {}",
                        r["statusText"].as_str().unwrap_or_default(),
                        r["url"].as_str().unwrap_or_default()
                    ));
                }
            }
            "Network.loadingFinished" => {
                if let Some(id) = p["requestId"].as_str() {
                    self.requests.remove(id);
                }
            }
            "Network.loadingFailed" => {
                let req = p["requestId"]
                    .as_str()
                    .and_then(|id| self.requests.remove(id));
                let blocked = p["blockedReason"].as_str();
                // Cancelled (e.g. by navigating away) is not a page error; blocked is.
                if p["canceled"] == true && blocked.is_none()
                    || req.as_ref().is_some_and(|r| r.implicit)
                {
                    return;
                }
                let (method, url) =
                    req.map_or_else(|| ("?".to_owned(), "?".to_owned()), |r| (r.method, r.url));
                let mut line = format!(
                    "request failed: {method} {url}: {}",
                    p["errorText"].as_str().unwrap_or_default()
                );
                if let Some(b) = blocked {
                    line.push_str(&format!(" (blocked: {b})"));
                }
                if let Some(c) = p["corsErrorStatus"]["corsError"].as_str() {
                    line.push_str(&format!(" (CORS: {c})"));
                }
                self.errors.push(line);
            }
            "Inspector.targetCrashed" => self.errors.push("page crashed".to_owned()),
            _ => {}
        }
    }
}

/// The path of an absolute URL (`/` if none), without query or fragment.
fn url_path(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest.find('/').map_or("/", |i| &rest[i..]);
    path.split(['?', '#']).next().unwrap_or(path)
}

/// `url:line:column` (1-based) of a call frame or exception details.
fn location(f: &Value) -> String {
    let url = f["url"].as_str().unwrap_or_default();
    let line = f["lineNumber"].as_i64().unwrap_or(-1) + 1;
    let col = f["columnNumber"].as_i64().unwrap_or(-1) + 1;
    format!("{url}:{line}:{col}")
}

/// The readable text of exception details: `Uncaught Error: message`.
fn exception_text(d: &Value) -> String {
    let text = d["text"].as_str().unwrap_or("exception");
    let ex = &d["exception"];
    let detail = ex["description"]
        .as_str()
        .and_then(|s| s.lines().next())
        .map(str::to_owned)
        .or_else(|| ex.get("value").map(|v| v.to_string()))
        .unwrap_or_default();
    if detail.is_empty() {
        text.to_owned()
    } else {
        format!("{text} {detail}")
    }
}

/// A console argument as text.
fn remote_text(o: &Value) -> String {
    if let Some(s) = o["value"].as_str() {
        return s.to_owned();
    }
    if let Some(v) = o.get("value") {
        return v.to_string();
    }
    for k in ["unserializableValue", "description"] {
        if let Some(s) = o[k].as_str() {
            return s.to_owned();
        }
    }
    o["type"].as_str().unwrap_or("?").to_owned()
}

impl Connection {
    async fn open(ws_url: &str) -> Result<Connection, String> {
        let host_port = ws_url
            .strip_prefix("ws://")
            .and_then(|r| r.split('/').next())
            .ok_or_else(|| format!("unexpected DevTools address {ws_url}"))?;
        let tcp = tokio::time::timeout(COMMAND_TIMEOUT, TcpStream::connect(host_port))
            .await
            .map_err(|_| format!("connecting to {ws_url}: timed out"))?
            .map_err(|e| format!("connecting to {ws_url}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE));
        let (ws, _) = tokio::time::timeout(
            COMMAND_TIMEOUT,
            tokio_tungstenite::client_async_with_config(ws_url, tcp, Some(config)),
        )
        .await
        .map_err(|_| format!("websocket handshake with {ws_url}: timed out"))?
        .map_err(|e| format!("websocket handshake with {ws_url}: {e}"))?;
        // Chromium sends nothing before the first command, so no bytes are left behind in the
        // handshake's buffer; from here on the socket is driven directly (see `io_loop`).
        let sock = Arc::new(ws.into_inner());
        let ws =
            WebSocket::from_raw_socket(NonBlocking(Arc::clone(&sock)), Role::Client, Some(config));
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
        });
        let (out, rx) = mpsc::unbounded_channel();
        let io_task = tokio::spawn(io_loop(ws, sock, rx, Arc::clone(&shared)));
        Ok(Connection {
            out,
            shared,
            next_id: AtomicU64::new(1),
            io_task,
        })
    }

    async fn call(
        &self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, String> {
        self.call_within(session, method, params, COMMAND_TIMEOUT)
            .await
    }

    async fn call_within(
        &self,
        session: Option<&str>,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut st = self.shared.lock();
            if let Some(reason) = &st.closed {
                return Err(format!(
                    "{method}: connection to chromium closed ({reason})"
                ));
            }
            st.pending.insert(id, tx);
        }
        if self.out.send(msg.to_string()).is_err() {
            self.shared.lock().pending.remove(&id);
            return Err(format!("{method}: connection to chromium closed"));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result.map_err(|e| format!("{method}: {e}")),
            Ok(Err(_)) => {
                let reason = self.shared.lock().closed.clone().unwrap_or_default();
                Err(format!(
                    "{method}: connection to chromium closed ({reason})"
                ))
            }
            Err(_) => {
                self.shared.lock().pending.remove(&id);
                Err(format!("{method}: no reply within {timeout:?}"))
            }
        }
    }

    /// Waits for a page event numbered `since` or later that matches `pred`; returns its params.
    async fn wait_event(
        &self,
        since: u64,
        timeout: Duration,
        pred: impl Fn(&str, &Value) -> bool,
    ) -> Result<Value, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.notify.notified();
            let mut notified = std::pin::pin!(notified);
            // Register before looking, so an event stored in between still wakes us.
            notified.as_mut().enable();
            {
                let st = self.shared.lock();
                if let Some((_, _, p)) = st
                    .events
                    .iter()
                    .find(|(seq, m, p)| *seq >= since && pred(m, p))
                {
                    return Ok(p.clone());
                }
                if let Some(reason) = &st.closed {
                    return Err(format!("connection to chromium closed ({reason})"));
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(format!("nothing within {timeout:?}"));
            }
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.io_task.abort();
    }
}

/// `Read`/`Write` over a tokio socket without blocking: `WouldBlock` when not ready, which
/// tungstenite passes through and `io_loop` answers by awaiting readiness.
struct NonBlocking(Arc<TcpStream>);

impl Read for NonBlocking {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for NonBlocking {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn would_block(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(io) if io.kind() == io::ErrorKind::WouldBlock)
}

/// Owns the websocket: reads and dispatches every message that is ready, writes queued
/// commands, and sleeps until the socket or the command queue has something.
async fn io_loop(
    mut ws: WebSocket<NonBlocking>,
    sock: Arc<TcpStream>,
    mut rx: mpsc::UnboundedReceiver<String>,
    shared: Arc<Shared>,
) {
    let reason = 'run: loop {
        loop {
            match ws.read() {
                Ok(Message::Text(t)) => {
                    if let Some(reply) = shared.dispatch(t.as_str()) {
                        match ws.write(Message::text(reply)) {
                            Ok(()) => {}
                            Err(e) if would_block(&e) => {}
                            Err(e) => break 'run format!("websocket write: {e}"),
                        }
                    }
                }
                Ok(Message::Close(_)) => {}
                Ok(_) => {}
                Err(e) if would_block(&e) => break,
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    break 'run "closed by chromium".to_owned();
                }
                Err(e) => break 'run format!("websocket read: {e}"),
            }
        }
        let want_write = match ws.flush() {
            Ok(()) => false,
            Err(e) if would_block(&e) => true,
            Err(e) => break format!("websocket write: {e}"),
        };
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(text) => match ws.write(Message::text(text)) {
                    Ok(()) => {}
                    Err(e) if would_block(&e) => {}
                    Err(e) => break format!("websocket write: {e}"),
                },
                None => {
                    let _ = ws.close(None);
                    break "client closed".to_owned();
                }
            },
            r = sock.readable() => if let Err(e) = r {
                break format!("websocket socket: {e}");
            },
            r = sock.writable(), if want_write => if let Err(e) = r {
                break format!("websocket socket: {e}");
            },
        }
    };
    shared.close(reason);
}
