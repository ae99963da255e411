//! A tiny HTTP/1.1 client for the API tests: one request per connection, raw enough to send
//! what a browser or a script would (bearer tokens, the session cookie, CSRF and Origin headers,
//! declared-but-unsent or chunked bodies) and to read event streams up to their first event.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `error` of a JSON error response.
    pub fn error(&self) -> String {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{self:?}"
        );
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error: {self:?}"))
            .to_owned()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The session id a login set.
    pub fn session_cookie(&self) -> String {
        let c = self.header("set-cookie").expect("a cookie");
        c.strip_prefix("sf_session=")
            .and_then(|c| c.split(';').next())
            .unwrap()
            .to_owned()
    }
}

pub struct Req {
    pub method: String,
    pub path: String,
    pub token: Option<String>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    /// Declare this Content-Length and send no body.
    pub declare_only: Option<usize>,
    /// `Cookie: sf_session=<this>`.
    pub cookie: Option<String>,
    /// `X-CSRF-Token`.
    pub csrf: Option<String>,
    /// `Origin`.
    pub origin: Option<String>,
    /// Send the body with `Transfer-Encoding: chunked` (no Content-Length).
    pub chunked: bool,
    /// Further headers.
    pub headers: Vec<(String, String)>,
}

pub fn req(method: &str, path: impl Into<String>, token: Option<&str>) -> Req {
    Req {
        method: method.to_owned(),
        path: path.into(),
        token: token.map(str::to_owned),
        content_type: None,
        body: Vec::new(),
        declare_only: None,
        cookie: None,
        csrf: None,
        origin: None,
        chunked: false,
        headers: Vec::new(),
    }
}

impl Req {
    pub fn json(mut self, v: &Value) -> Self {
        self.content_type = Some("application/json".into());
        self.body = serde_json::to_vec(v).unwrap();
        self
    }

    pub fn body(mut self, content_type: &str, body: &[u8]) -> Self {
        self.content_type = Some(content_type.into());
        self.body = body.to_vec();
        self
    }

    pub fn header(mut self, k: &str, v: impl Into<String>) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }

    pub fn token(mut self, t: &str) -> Self {
        self.token = Some(t.into());
        self
    }

    /// `Cookie: sf_session=<id>`.
    pub fn cookie(mut self, id: &str) -> Self {
        self.cookie = Some(id.into());
        self
    }

    pub fn csrf(mut self, c: &str) -> Self {
        self.csrf = Some(c.into());
        self
    }

    /// `X-Forwarded-For` (honoured only from a trusted proxy).
    pub fn via_ip(self, ip: &str) -> Self {
        self.header("X-Forwarded-For", ip)
    }

    pub async fn send(self, addr: SocketAddr) -> Resp {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n",
            self.method, self.path
        );
        if let Some(t) = &self.token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        if let Some(c) = &self.content_type {
            head.push_str(&format!("Content-Type: {c}\r\n"));
        }
        if let Some(c) = &self.cookie {
            head.push_str(&format!("Cookie: lang=en; sf_session={c}\r\n"));
        }
        if let Some(c) = &self.csrf {
            head.push_str(&format!("X-CSRF-Token: {c}\r\n"));
        }
        if let Some(o) = &self.origin {
            head.push_str(&format!("Origin: {o}\r\n"));
        }
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if self.chunked {
            head.push_str("Transfer-Encoding: chunked\r\n\r\n");
            let mut out = head.into_bytes();
            for chunk in self.body.chunks(8192) {
                out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                out.extend_from_slice(chunk);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
            // The server may answer 413 and close before it read everything.
            let _ = s.write_all(&out).await;
        } else {
            let length = self.declare_only.unwrap_or(self.body.len());
            head.push_str(&format!("Content-Length: {length}\r\n\r\n"));
            let mut out = head.into_bytes();
            if self.declare_only.is_none() {
                out.extend_from_slice(&self.body);
            }
            s.write_all(&out).await.unwrap();
        }
        // To the end of the response; an event stream never ends: up to its first event.
        let mut raw = Vec::new();
        let read = async {
            let mut buf = [0_u8; 8192];
            loop {
                // A reset after the answer (a refused body left unread) ends the response.
                let n = match s.read(&mut buf).await {
                    Ok(n) => n,
                    Err(e) if !raw.is_empty() => {
                        eprintln!("read after {} bytes: {e}", raw.len());
                        0
                    }
                    Err(e) => panic!("read: {e}"),
                };
                if n == 0 {
                    break;
                }
                raw.extend_from_slice(&buf[..n]);
                if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
                    let body = &raw[split + 4..];
                    if head.contains("content-type: text/event-stream")
                        && body.windows(2).any(|w| w == b"\n\n")
                    {
                        break;
                    }
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(60), read)
            .await
            .expect("response in time");
        parse(&raw)
    }
}

pub fn parse(raw: &[u8]) -> Resp {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Resp {
        status,
        headers,
        body,
    }
}

/// Decodes a chunked body; an event stream read up to its first event stops mid-body.
fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let n = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        if n == 0 || b.len() < eol + 2 + n {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[(eol + 2 + n + 2).min(b.len())..];
    }
}
