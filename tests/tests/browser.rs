//! Tests of the CDP browser harness (`shopfloor_tests::browser`) against tiny pages served by
//! an in-process HTTP server. Skipped (with a message on stderr) when Chromium is missing,
//! unless `SHOPFLOOR_TEST_BROWSER=required` or `CI=true`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use shopfloor_tests::browser::{Browser, chromium_or_skip};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const CLEAN: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>clean</title></head>
<body style="margin:0">
<h1 id="title">Shopfloor test page</h1>
<button id="go" onclick="document.getElementById('out').textContent = 'clicked ' + (++window.clicks)">Go</button>
<p id="out">not clicked</p>
<input id="name" oninput="document.getElementById('echo').textContent = this.value">
<p id="echo"></p>
<div id="later"></div>
<div style="height:3000px;background:linear-gradient(#fff,#36c)"></div>
<button id="far" onclick="this.textContent = 'far clicked'">Far</button>
<script>
window.clicks = 0;
setTimeout(() => { document.getElementById('later').textContent = 'ready'; }, 300);
</script>
</body></html>"#;

const CONSOLE: &str = r#"<!doctype html><html><head><meta charset="utf-8"></head><body>
<script>console.error('boom'); console.warn('careful'); console.assert(1 === 2, 'math broke');</script>
</body></html>"#;

const THROWS: &str = r#"<!doctype html><html><head><meta charset="utf-8"></head><body>
<script>
throw new Error('kaboom-uncaught');
</script>
</body></html>"#;

const MISSING: &str = r#"<!doctype html><html><head><meta charset="utf-8"></head><body>
<script src="/nope.js"></script>
</body></html>"#;

const CSP: &str = r#"<!doctype html><html><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="script-src 'self'">
</head><body><script>document.title = 'inline ran';</script></body></html>"#;

const FETCH_500: &str = r#"<!doctype html><html><head><meta charset="utf-8"></head><body>
<script>fetch('/api/broken').then(r => { document.title = 'fetched ' + r.status; });</script>
</body></html>"#;

const DIALOG: &str = r#"<!doctype html><html><head><meta charset="utf-8"></head><body>
<button id="del" onclick="document.getElementById('answer').textContent = confirm('Delete line 4?') ? 'yes' : 'no'">Delete</button>
<p id="answer"></p>
</body></html>"#;

/// Serves the pages above on 127.0.0.1 (any other path: 404). Returns the base URL.
async fn serve() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf);
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let (status, body) = match path.as_str() {
                    "/" | "/clean.html" => ("200 OK", CLEAN),
                    "/console.html" => ("200 OK", CONSOLE),
                    "/throw.html" => ("200 OK", THROWS),
                    "/missing.html" => ("200 OK", MISSING),
                    "/csp.html" => ("200 OK", CSP),
                    "/fetch500.html" => ("200 OK", FETCH_500),
                    "/dialog.html" => ("200 OK", DIALOG),
                    "/api/broken" => ("500 Internal Server Error", "broken"),
                    _ => ("404 Not Found", "not found"),
                };
                let ctype = if status.starts_with("200") {
                    "text/html; charset=utf-8"
                } else {
                    "text/plain"
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\
                     Cache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

fn out_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shopfloor-browser-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn assert_png(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        path.display()
    );
    assert!(
        bytes.len() > 1000,
        "{} is only {} bytes",
        path.display(),
        bytes.len()
    );
    bytes
}

/// PNG width and height from the IHDR chunk.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    (w, h)
}

/// Processes (other than zombies) whose command line mentions `needle` (Linux /proc).
fn processes_mentioning(needle: &str) -> Vec<u32> {
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
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            found.push(pid);
        }
    }
    found
}

/// Waits (up to 15 s) until no process mentions the profile dir; returns the survivors.
async fn survivors(profile: &str) -> Vec<u32> {
    for _ in 0..150 {
        let left = processes_mentioning(profile);
        if left.is_empty() {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    processes_mentioning(profile)
}

#[tokio::test]
async fn drives_a_page() {
    if chromium_or_skip("drives_a_page").is_none() {
        return;
    }
    let base = serve().await;
    let mut b = Browser::launch().await.unwrap();
    b.goto(&format!("{base}/clean.html")).await.unwrap();

    assert_eq!(b.eval("1 + 2").await.unwrap(), json!(3));
    assert_eq!(
        b.eval("document.getElementById('title').textContent")
            .await
            .unwrap(),
        json!("Shopfloor test page")
    );
    assert_eq!(
        b.eval("({a: [1, 'x', null], b: true})").await.unwrap(),
        json!({"a": [1, "x", null], "b": true})
    );
    assert_eq!(b.eval("undefined").await.unwrap(), json!(null));
    assert_eq!(
        b.eval("new Promise(r => setTimeout(() => r('later'), 50))")
            .await
            .unwrap(),
        json!("later")
    );
    assert_eq!(
        b.eval("[innerWidth, innerHeight]").await.unwrap(),
        json!([1440, 900])
    );

    let err = b
        .eval("throw new Error('nope-from-eval')")
        .await
        .unwrap_err();
    assert!(err.contains("nope-from-eval"), "{err}");
    let err = b.eval("no_such_variable + 1").await.unwrap_err();
    assert!(err.contains("no_such_variable"), "{err}");
    let err = b
        .eval("Promise.reject(new Error('rejected-here'))")
        .await
        .unwrap_err();
    assert!(err.contains("rejected-here"), "{err}");

    // Click: a real mouse click runs the handler.
    b.click("#go").await.unwrap();
    assert_eq!(
        b.eval("document.getElementById('out').textContent")
            .await
            .unwrap(),
        json!("clicked 1")
    );
    b.click("#go").await.unwrap();
    assert_eq!(
        b.eval("document.getElementById('out').textContent")
            .await
            .unwrap(),
        json!("clicked 2")
    );
    // An element far below the fold is scrolled into view first.
    b.click("#far").await.unwrap();
    assert_eq!(
        b.eval("document.getElementById('far').textContent")
            .await
            .unwrap(),
        json!("far clicked")
    );
    let err = b.click("#does-not-exist").await.unwrap_err();
    assert!(err.contains("#does-not-exist"), "{err}");

    // Typing fires input events.
    b.type_into("#name", "Presse 4").await.unwrap();
    b.type_into("#name", " – Ölmühle").await.unwrap();
    assert_eq!(
        b.eval("document.getElementById('name').value")
            .await
            .unwrap(),
        json!("Presse 4 – Ölmühle")
    );
    assert_eq!(
        b.eval("document.getElementById('echo').textContent")
            .await
            .unwrap(),
        json!("Presse 4 – Ölmühle")
    );
    assert!(b.type_into("#nothing-here", "x").await.is_err());

    b.wait_for(
        "document.getElementById('later').textContent === 'ready'",
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let err = b
        .wait_for("window.neverTrue === true", Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(err.contains("window.neverTrue === true"), "{err}");

    // Screenshots: viewport and full page.
    let dir = out_dir();
    b.set_viewport(800, 600).await.unwrap();
    assert_eq!(
        b.eval("[innerWidth, innerHeight]").await.unwrap(),
        json!([800, 600])
    );
    let shot = dir.join("viewport.png");
    b.screenshot(&shot, false).await.unwrap();
    assert_eq!(png_size(&assert_png(&shot)), (800, 600));
    let full = dir.join("nested/full.png");
    b.screenshot(&full, true).await.unwrap();
    let (w, h) = png_size(&assert_png(&full));
    assert_eq!(w, 800);
    assert!(h > 3000, "full page height {h}");

    // A same-document navigation (fragment only) has no load event and must not wait for one.
    b.goto(&format!("{base}/clean.html#far")).await.unwrap();
    assert_eq!(b.eval("location.hash").await.unwrap(), json!("#far"));

    // A clean page reports nothing, also after navigating again.
    b.goto(&base).await.unwrap();
    assert_eq!(b.take_errors(), Vec::<String>::new());
    assert_eq!(b.take_warnings(), Vec::<String>::new());

    let profile = b.profile_dir().to_path_buf();
    b.close().await.unwrap();
    assert!(!profile.exists(), "{} left behind", profile.display());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn collects_page_errors() {
    if chromium_or_skip("collects_page_errors").is_none() {
        return;
    }
    let base = serve().await;
    let mut b = Browser::launch().await.unwrap();

    b.goto(&format!("{base}/console.html")).await.unwrap();
    b.wait_for(
        "document.readyState === 'complete'",
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    // Console events may arrive just after the load event: poll for them.
    let mut errors = Vec::new();
    for _ in 0..100 {
        errors.extend(b.take_errors());
        if errors.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        errors
            .iter()
            .any(|e| e.contains("console.error") && e.contains("boom")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("math broke")),
        "{errors:?}"
    );
    let warnings = b.take_warnings();
    assert!(
        warnings.iter().any(|w| w.contains("careful")),
        "{warnings:?}"
    );
    assert!(!errors.iter().any(|e| e.contains("careful")), "{errors:?}");

    b.goto(&format!("{base}/throw.html")).await.unwrap();
    let errors = wait_for_error(&mut b, "kaboom-uncaught").await;
    let e = errors
        .iter()
        .find(|e| e.contains("kaboom-uncaught"))
        .unwrap();
    assert!(e.contains("throw.html:3"), "location missing: {e}");

    b.goto(&format!("{base}/missing.html")).await.unwrap();
    let errors = wait_for_error(&mut b, "/nope.js").await;
    let e = errors.iter().find(|e| e.contains("/nope.js")).unwrap();
    assert!(e.contains("404"), "status missing: {e}");

    b.goto(&format!("{base}/csp.html")).await.unwrap();
    let errors = wait_for_error(&mut b, "Content Security Policy").await;
    assert_ne!(b.eval("document.title").await.unwrap(), json!("inline ran"));
    assert!(errors.len() == 1, "{errors:?}");

    b.goto(&format!("{base}/fetch500.html")).await.unwrap();
    let errors = wait_for_error(&mut b, "/api/broken").await;
    let e = errors.iter().find(|e| e.contains("/api/broken")).unwrap();
    assert!(e.contains("500"), "status missing: {e}");

    // Dialogs are accepted (they would block the page) and noted as warnings.
    b.goto(&format!("{base}/dialog.html")).await.unwrap();
    b.click("#del").await.unwrap();
    assert_eq!(
        b.eval("document.getElementById('answer').textContent")
            .await
            .unwrap(),
        json!("yes")
    );
    let warnings = b.take_warnings();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("confirm") && w.contains("Delete line 4?")),
        "{warnings:?}"
    );

    // Taking empties the list.
    assert_eq!(b.take_errors(), Vec::<String>::new());
    // A navigation error is an Err of goto (nothing listens on port 9 of localhost).
    assert!(b.goto("http://127.0.0.1:9/").await.is_err());
    drop(b);
}

/// Polls take_errors (up to 5 s) until one mentions `needle`; returns all errors taken.
async fn wait_for_error(b: &mut Browser, needle: &str) -> Vec<String> {
    let mut errors = Vec::new();
    for _ in 0..100 {
        errors.extend(b.take_errors());
        if errors.iter().any(|e| e.contains(needle)) {
            return errors;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no error mentioning {needle}: {errors:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_launches_and_drop_kills() {
    if chromium_or_skip("parallel_launches_and_drop_kills").is_none() {
        return;
    }
    let base = serve().await;
    let (a, b) = tokio::join!(Browser::launch(), Browser::launch());
    let (mut a, mut b) = (a.unwrap(), b.unwrap());
    assert_ne!(a.pid(), b.pid());
    assert_ne!(a.profile_dir(), b.profile_dir());
    a.goto(&base).await.unwrap();
    b.goto(&format!("{base}/clean.html")).await.unwrap();
    a.click("#go").await.unwrap();
    assert_eq!(b.eval("window.clicks").await.unwrap(), json!(0));
    assert_eq!(a.eval("window.clicks").await.unwrap(), json!(1));

    let pid = a.pid().unwrap();
    let profile = a.profile_dir().to_path_buf();
    drop(a);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "browser process {pid} still there after drop"
    );
    assert!(!profile.exists(), "{} left behind", profile.display());
    let left = survivors(&profile.to_string_lossy()).await;
    assert!(left.is_empty(), "chromium helpers survived: {left:?}");

    // The other browser is unaffected.
    assert_eq!(b.eval("window.clicks").await.unwrap(), json!(0));
    b.close().await.unwrap();
}

#[test]
fn panicking_test_still_cleans_up() {
    if chromium_or_skip("panicking_test_still_cleans_up").is_none() {
        return;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let b = Browser::launch().await.unwrap();
            tx.send((b.pid().unwrap(), b.profile_dir().to_path_buf()))
                .unwrap();
            panic!("deliberate panic with a live browser");
        });
    });
    assert!(t.join().is_err(), "the thread should have panicked");
    let (pid, profile) = rx.recv().unwrap();
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "browser process {pid} survived the panic"
    );
    assert!(!profile.exists(), "{} left behind", profile.display());
}
