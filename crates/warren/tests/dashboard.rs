//! `warren up`'s admin listener: `/metrics` read by a real Prometheus text parser, the event
//! stream's format and bound, and the dashboard itself in headless chromium driven through
//! chromedriver (WebDriver): a service added by a reload appears, and with it a switch with its
//! backend and an agent host with the agent the test runs on it (their sections shown only once
//! they run); a registry name whose lease is released disappears; all without reloading the
//! page, and the browser logs no error.

mod support;
mod up_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::{T, command};
use up_support::{Up, addr, exchange, scratch};

/// A node with its own registry, an exec service and a builtin, its dashboard on a free port.
fn start(dir: &Path, extra: &str) -> (Up, Vec<String>) {
    let conf = dir.join("warren.toml");
    std::fs::write(&conf, config(dir, extra)).unwrap();
    let mut cmd = command(&["up", "-c", conf.to_str().unwrap(), "--admin", "127.0.0.1:0"]);
    cmd.env("WARREN_TOKEN", "dashboard-test-node");
    let up = Up::spawn(cmd);
    let lines = up.until(|l| l.starts_with("warren: up:"));
    (up, lines)
}

fn config(dir: &Path, extra: &str) -> String {
    format!(
        "status = \"unix:{dir}/status.sock\"\n\
         [[service]]\nname = \"registry\"\nbuiltin = \"registry\"\nport = 0\ndata = \"{dir}/registry\"\n\
         [[service]]\nname = \"echo\"\nbuiltin = \"echo\"\nport = 0\n\
         [[service]]\nname = \"hello\"\nport = 0\nserver = \"/bin/echo\"\nserver_args = [\"hello\"]\n{extra}",
        dir = dir.display()
    )
}

/// The dashboard's address, from its line (`warren: dashboard: http://ADDR/`).
fn dashboard(lines: &[String]) -> SocketAddr {
    let line = lines.iter().find_map(|l| l.strip_prefix("warren: dashboard: http://"));
    line.unwrap_or_else(|| panic!("no dashboard line: {lines:#?}")).trim_end_matches('/').parse().unwrap()
}

/// `GET path` over a fresh connection: the status code, the head and the body.
fn get(at: SocketAddr, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(at).unwrap();
    stream.set_read_timeout(Some(T)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {at}\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((answer.as_str(), ""));
    let code = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, head.to_owned(), body.to_owned())
}

/// Waits (bounded by `T`) until `ready` holds of a fresh `GET path`'s body; returns that body.
fn get_until(at: SocketAddr, path: &str, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + T;
    loop {
        let (code, _, body) = get(at, path);
        if code == 200 && ready(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "GET {path} never became ready; last answer {code}:\n{body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Opens `/events` and reads its head; the stream stays open while the result lives.
fn open_events(at: SocketAddr) -> (u16, BufReader<TcpStream>) {
    let mut stream = TcpStream::connect(at).unwrap();
    stream.set_read_timeout(Some(T)).unwrap();
    write!(stream, "GET /events HTTP/1.1\r\nHost: {at}\r\n\r\n").unwrap();
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    let code = status.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
            break;
        }
    }
    (code, reader)
}

#[test]
fn metrics_parse_as_prometheus_text_and_events_stream_bounded() {
    let dir = scratch("dashboard-metrics");
    let (up, lines) = start(&dir, "");
    let admin = dashboard(&lines);
    assert!(admin.ip().is_loopback());
    let hello = addr(&lines, "hello", "tcp");
    for _ in 0..3 {
        assert_eq!(exchange(hello, b""), "hello\n");
    }

    // Sampled once a second: wait for the three starts to show, then parse for real.
    let body = get_until(admin, "/metrics", |b| b.contains("warren_node_spawned_total{service=\"hello\"} 3"));
    let (_, head, _) = get(admin, "/metrics");
    assert!(head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{head}");
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok::<_, std::io::Error>(l.to_owned())))
        .expect("Prometheus text");
    let value = |family: &str, service: &str| {
        let sample = scrape.samples.iter().find(|s| s.metric == family && s.labels.get("service") == Some(service));
        match sample.unwrap_or_else(|| panic!("no {family}{{service={service:?}}} in:\n{body}")).value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
            ref other => panic!("{family}: {other:?}"),
        }
    };
    assert_eq!(value("warren_node_spawned_total", "hello"), 3.0);
    assert_eq!(value("warren_node_refused_total", "hello"), 0.0);
    assert_eq!(value("warren_node_running", "echo"), 0.0);
    assert_eq!(value("warren_node_spawn_rate", "registry"), 0.0);
    for (family, kind) in [
        ("warren_node_spawned_total", "counter"),
        ("warren_node_refused_total", "counter"),
        ("warren_node_running", "gauge"),
        ("warren_node_spawn_rate", "gauge"),
        ("warren_node_services", "gauge"),
        ("warren_node_children", "gauge"),
    ] {
        assert!(body.contains(&format!("# TYPE {family} {kind}\n")), "no {kind} {family} in:\n{body}");
        assert!(scrape.docs.contains_key(family), "{family} has no HELP");
    }
    let services = scrape.samples.iter().find(|s| s.metric == "warren_node_services").unwrap();
    assert!(matches!(services.value, prometheus_parse::Value::Gauge(v) if v == 3.0), "{body}");

    let status = get_until(admin, "/api/status", |b| b.contains("\"name\":\"hello\""));
    let json: serde_json::Value = serde_json::from_str(&status).unwrap();
    let hello_row = json["services"]["services"].as_array().unwrap().iter().find(|s| s["name"] == "hello").unwrap();
    assert_eq!((hello_row["kind"].as_str(), hello_row["spawned"].as_u64()), (Some("exec nowait"), Some(3)));
    assert!(json["history"].as_array().is_some_and(|h| !h.is_empty()), "{status}");
    assert_eq!(get(admin, "/nowhere").0, 404);
    let (code, head, page) = get(admin, "/");
    assert_eq!(code, 200);
    assert!(head.to_ascii_lowercase().contains("content-security-policy: default-src 'none'"), "{head}");
    assert!(page.contains("<script src=\"/app.js\""), "{page}");

    // The first two events are the whole picture; the stream count is bounded.
    let (code, mut first) = open_events(admin);
    assert_eq!(code, 200);
    let mut events = Vec::new();
    while events.len() < 2 {
        let mut line = String::new();
        assert!(first.read_line(&mut line).unwrap() > 0, "the stream ended early");
        if let Some(name) = line.strip_prefix("event: ") {
            events.push(name.trim().to_owned());
        }
    }
    assert_eq!(events, ["services", "names"]);
    let mut streams: Vec<_> = (1..16).map(|_| open_events(admin)).collect();
    assert!(streams.iter().all(|(code, _)| *code == 200));
    assert_eq!(open_events(admin).0, 503, "a 17th stream is refused");
    streams.clear();
    drop(first);
    drop(up);
    std::fs::remove_dir_all(dir).unwrap();
}

/// The texts of the cells of the first row `css` finds, read in one script: the page replaces
/// its rows at each event, so an element found by one command may be gone by the next.
async fn cells(browser: &fantoccini::Client, css: &str) -> Vec<String> {
    let script = "return Array.from(document.querySelector(arguments[0]).cells, (c) => c.textContent);";
    let texts = browser.execute(script, vec![serde_json::json!(css)]).await.unwrap();
    serde_json::from_value(texts).unwrap()
}

/// An agent that answers its argument. It imports `migrate` and checks the flag once, so that
/// it has a safe point and may run as a mobile agent, one the node's roster follows.
const ID: &str = r#"(module
  (import "warren" "migrate" (func $migrate (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $flag (export "migrate_requested") (mut i32) (i32.const 0))
  (func (export "id") (param i64) (result i64)
    (if (global.get $flag) (then (drop (call $migrate (i32.const 0) (i32.const 0)))))
    (local.get 0)))"#;

/// chromedriver on a free port, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    /// `None` (with the reason printed) when chromedriver is not installed.
    fn start() -> Option<Driver> {
        let port = warren_testkit::free_port().unwrap();
        let child = match Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) => {
                eprintln!("SKIPPED: chromedriver cannot run ({e}); scripts/test installs chromium and chromium-driver");
                return None;
            }
        };
        let driver = Driver { child, url: format!("http://127.0.0.1:{port}") };
        let deadline = Instant::now() + T;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(driver)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The browser's console log (chromedriver's `goog:loggingPrefs`).
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(&self, base: &url::Url, session: Option<&str>) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (axum::http::Method, Option<String>) {
        (axum::http::Method::POST, Some(r#"{"type":"browser"}"#.to_owned()))
    }
}

#[test]
fn the_dashboard_shows_changes_live_in_a_real_browser() {
    let Some(driver) = Driver::start() else { return };
    let dir = scratch("dashboard-browser");
    let (up, lines) = start(&dir, "");
    let admin = dashboard(&lines);
    let registry = addr(&lines, "registry", "tcp");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let capabilities = serde_json::json!({
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
            },
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let browser = match fantoccini::ClientBuilder::new(connector)
            .capabilities(capabilities.as_object().unwrap().clone())
            .connect(&driver.url)
            .await
        {
            Ok(browser) => browser,
            Err(e) => {
                eprintln!("SKIPPED: chromium cannot start here, even headless without a sandbox: {e}");
                return;
            }
        };
        let present = |css: String| {
            let browser = &browser;
            async move { browser.find_all(fantoccini::Locator::Css(&css)).await.unwrap().len() }
        };
        let until = |css: String, want: bool| async move {
            let deadline = Instant::now() + T;
            while (present(css.clone()).await > 0) != want {
                assert!(Instant::now() < deadline, "{css} never became {}", if want { "present" } else { "absent" });
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };

        browser.goto(&format!("http://{admin}/")).await.unwrap();
        until("tr[data-service='hello']".into(), true).await;
        until("#live.badge:not(.off)".into(), true).await;
        // No switch, object server or agent host runs yet: their sections are hidden.
        for section in ["switches", "objects", "agents"] {
            assert_eq!(present(format!("section#{section}[hidden]")).await, 1, "{section} shown with nothing in it");
        }
        // A mark that a reload of the page would wipe out.
        browser.execute("window.stillTheSamePage = true;", vec![]).await.unwrap();

        // (a) A service added by a reload appears; so do a switch in front of the echo builtin
        // and an agent host, each in its own section.
        let echo = addr(&lines, "echo", "tcp");
        let added = format!(
            "[[service]]\nname = \"later\"\nbuiltin = \"daytime\"\nport = 0\n\
             [[service]]\nname = \"front\"\nbuiltin = \"switch\"\nport = 0\nbackend = [\"{echo},weight=3\"]\n\
             [[service]]\nname = \"agents\"\nbuiltin = \"agents\"\nmodel = \"thread\"\nport = 0\nallow_unsigned = true\n"
        );
        let conf = dir.join("warren.toml");
        std::fs::write(&conf, config(&dir, &added)).unwrap();
        up.signal(Signal::SIGHUP);
        let reloaded = up.until(|l| l == "warren: reloaded");
        until("tr[data-service='later']".into(), true).await;
        until(format!("section#switches:not([hidden]) tr[data-backend='{echo}']"), true).await;
        let backend = format!("tr[data-backend='{echo}']");
        let texts = cells(&browser, &backend).await;
        assert_eq!((texts[0].as_str(), texts[3].as_str(), texts[4].as_str()), ("front (relay, round-robin)", "up", "3"));
        let front = addr(&reloaded, "front", "tcp");
        assert_eq!(exchange(front, b"through the switch"), "through the switch", "echo, relayed");
        // The backend's counts move live: one connection, 18 bytes each way.
        let deadline = Instant::now() + T;
        loop {
            let texts = cells(&browser, &backend).await;
            if texts[7] == "1" && texts[10] == "18" && texts[11] == "18" {
                break;
            }
            assert!(Instant::now() < deadline, "the backend's counts never showed the connection: {texts:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let agents = addr(&reloaded, "agents", "tcp");
        let module = dir.join("id.wat");
        std::fs::write(&module, ID).unwrap();
        let (ran, out, err) =
            support::run(command(&["agents", "run", "--mobile", &agents.to_string(), module.to_str().unwrap(), "7", "--entry", "id"]), b"", T);
        // --mobile: the agent runs as one the node's roster follows (where it is, its hops).
        assert!(ran.success() && out.lines().any(|l| l == "7"), "{out:?} {err}");
        until("section#agents:not([hidden]) tr[data-agent^='agents/']".into(), true).await;
        let texts = cells(&browser, "tr[data-agent^='agents/']").await;
        assert_eq!((texts[0].as_str(), texts[3].as_str(), texts[4].as_str()), ("agents", "finished", "0"), "{texts:?}");
        assert_eq!(present("#hops-chart polyline".into()).await, 1, "the hops chart has the agent host's line");
        // The node's /metrics counts the agent from its roster.
        let metrics = get_until(admin, "/metrics", |b| b.contains("warren_node_agents_started_total{service=\"agents\"} 1"));
        for line in [
            "warren_node_agents_ended_total{service=\"agents\",outcome=\"finished\"} 1",
            "warren_node_agents_running{service=\"agents\"} 0",
            "warren_node_agents_hops_in_total{service=\"agents\"} 0",
        ] {
            assert!(metrics.lines().any(|l| l == line), "no {line:?} in:\n{metrics}");
        }

        // (b) A registry name appears with its lease, and vanishes when the lease is released.
        let mut register = command(&[
            "register",
            "dashboard-probe",
            "127.0.0.1:9",
            "--ttl",
            "30",
            "--registry",
            &registry.to_string(),
            "--token",
            "dashboard-test",
        ]);
        let mut register = register.spawn().unwrap();
        until("tr[data-name='dashboard-probe']".into(), true).await;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(register.id() as i32), Signal::SIGTERM).unwrap();
        let released = support::wait_bounded(&mut register, T).expect("warren register stops");
        assert!(released.success());
        until("tr[data-name='dashboard-probe']".into(), false).await;
        let same = browser.execute("return window.stillTheSamePage === true;", vec![]).await.unwrap();
        assert_eq!(same, serde_json::json!(true), "the page changed without being reloaded");

        // (c) No error in the browser's console, nor any the page caught.
        let caught = browser.execute("return window.dashboardErrors;", vec![]).await.unwrap();
        assert_eq!(caught, serde_json::json!([]));
        let log = browser.issue_cmd(BrowserLog).await.unwrap();
        let errors: Vec<_> = log.as_array().unwrap().iter().filter(|entry| entry["level"] == "SEVERE").collect();
        assert!(errors.is_empty(), "the console has errors: {errors:#?}");
        browser.close().await.unwrap();
    });
    drop(up);
    std::fs::remove_dir_all(dir).unwrap();
}
