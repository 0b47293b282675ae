//! The logs: HTTP's access log in nginx's `combined` format, for requests curl makes, compared
//! with the line nginx itself writes for the same requests when nginx is installed; and the JSON
//! log of `warren up`, with the access log set in warren.toml.

mod support;
mod up_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Server, T};
use up_support::{Up, addr};

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("warren-logs-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("root")).unwrap();
    std::fs::write(dir.join("root/index.html"), b"<h1>warren</h1>\n").unwrap();
    dir
}

/// curl's requests: a GET with a referer and a user agent holding a quote, a HEAD, and a GET
/// of a name that is not there.
fn curl_requests(base: &str) {
    let requests: [&[&str]; 3] = [
        &["-e", "http://example.test/from", "-A", "agent \"quoted\"", &format!("{base}/index.html")],
        &["-I", &format!("{base}/index.html")],
        &[&format!("{base}/missing")],
    ];
    for args in requests {
        let status = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "--max-time", "10"])
            .args(args)
            .status()
            .expect("curl runs");
        assert!(status.success(), "curl {args:?}");
    }
}

/// The file's lines once it has `count` of them, waiting at most `T`.
fn lines_of(path: &Path, count: usize) -> Vec<String> {
    let deadline = Instant::now() + T;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(String::from).collect();
        if lines.len() >= count {
            return lines;
        }
        assert!(Instant::now() < deadline, "{} has {} lines, want {count}: {text}", path.display(), lines.len());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// nginx's `combined`: `$remote_addr - $remote_user [$time_local] "$request" $status
/// $body_bytes_sent "$http_referer" "$http_user_agent"`, one pattern per field.
fn combined() -> regex::Regex {
    regex::Regex::new(concat!(
        r"^(?P<addr>127\.0\.0\.1) - (?P<user>-) ",
        r"\[(?P<time>\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4})\] ",
        r#""(?P<request>[^"]*)" (?P<status>\d{3}) (?P<bytes>\d+) "(?P<referer>[^"]*)" "(?P<agent>[^"]*)"$"#,
    ))
    .unwrap()
}

/// The line without its time, which two servers cannot share, and without its byte count
/// unless `bytes`.
fn timeless(line: &str, bytes: bool) -> String {
    let template = if bytes {
        "$addr - $user [] \"$request\" $status $bytes \"$referer\" \"$agent\""
    } else {
        "$addr - $user [] \"$request\" $status _ \"$referer\" \"$agent\""
    };
    combined().replace(line, template).into_owned()
}

#[test]
fn access_log_is_nginx_combined_under_event_and_fork() {
    for model in ["event", "fork"] {
        let dir = scratch(model);
        let log = dir.join("access.log");
        let root = dir.join("root");
        let server =
            Server::serve("http", model, &["--root", root.to_str().unwrap(), "--access-log", log.to_str().unwrap()]);
        curl_requests(&format!("http://{}", server.addr));
        let lines = lines_of(&log, 3);
        assert_eq!(lines.len(), 3, "{lines:#?}");
        let fields: Vec<regex::Captures> = lines
            .iter()
            .map(|l| combined().captures(l).unwrap_or_else(|| panic!("{model}: not combined: {l}")))
            .collect();
        let curl = Command::new("curl").arg("--version").output().unwrap();
        let version = String::from_utf8_lossy(&curl.stdout).split_whitespace().nth(1).unwrap().to_owned();
        let want = [
            ("GET /index.html HTTP/1.1", "200", "16", "http://example.test/from", r"agent \x22quoted\x22".to_owned()),
            ("HEAD /index.html HTTP/1.1", "200", "0", "-", format!("curl/{version}")),
            ("GET /missing HTTP/1.1", "404", "", "-", format!("curl/{version}")),
        ];
        for (got, (request, status, bytes, referer, agent)) in fields.iter().zip(want) {
            assert_eq!(&got["request"], request, "{model}");
            assert_eq!(&got["status"], status, "{model}: {request}");
            if !bytes.is_empty() {
                assert_eq!(&got["bytes"], bytes, "{model}: {request}");
            }
            assert_eq!(&got["referer"], referer, "{model}: {request}");
            assert_eq!(got["agent"], agent, "{model}: {request}");
        }
        drop(server);
        if model == "event" {
            compare_with_nginx(&dir, &lines);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// The same requests to nginx, when it is installed: its lines, without their time, are
/// warren's (the 404's body differs, so its byte count is left out).
fn compare_with_nginx(dir: &Path, ours: &[String]) {
    let Some(nginx) = ["/usr/sbin/nginx", "/usr/bin/nginx"].into_iter().map(PathBuf::from).find(|p| p.exists()) else {
        eprintln!("nginx is not installed: not compared with it");
        return;
    };
    let port = warren_testkit::free_port().unwrap();
    let d = dir.display();
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\nevents {{}}\n\
             http {{\n  access_log {d}/nginx-access.log combined;\n  client_body_temp_path {d}/body;\n  \
             proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  \
             scgi_temp_path {d}/scgi;\n  server {{ listen 127.0.0.1:{port}; root {d}/root; }}\n}}\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(nginx)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + T;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nginx did not start: {}",
            std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // That probe was a connection without a request: nginx logs none for it.
    curl_requests(&format!("http://127.0.0.1:{port}"));
    let theirs = lines_of(&dir.join("nginx-access.log"), 3);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(theirs.len(), 3, "{theirs:#?}");
    for (ours, theirs) in ours.iter().zip(&theirs) {
        let bytes = !ours.contains("/missing");
        assert_eq!(timeless(ours, bytes), timeless(theirs, bytes), "\nwarren: {ours}\nnginx:  {theirs}");
    }
}

#[test]
fn up_writes_json_lines_and_the_access_log_set_in_its_config() {
    let dir = scratch("up");
    let log = dir.join("access.log");
    let conf = dir.join("warren.toml");
    std::fs::write(
        &conf,
        format!(
            "status = \"off\"\nregistry = \"off\"\nlog_format = \"json\"\naccess_log = \"{}\"\n\
             [[service]]\nname = \"web\"\nbuiltin = \"http\"\nport = 0\nroot = \"{}/root\"\n\
             [[service]]\nname = \"hello\"\nport = 0\nserver = \"/bin/echo\"\nserver_args = [\"hello\"]\n",
            log.display(),
            dir.display()
        ),
    )
    .unwrap();
    let up = Up::start(&["up", "-c", conf.to_str().unwrap()]);
    let lines = up.until(|l| l.starts_with("warren: up:"));
    let (web, hello) = (addr(&lines, "web", "tcp"), addr(&lines, "hello", "tcp"));
    assert_eq!(up_support::exchange(hello, b""), "hello\n");
    let events: Vec<serde_json::Value> = up
        .until(|l| l.contains("\"EXIT\""))
        .iter()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let start = events.iter().find(|e| e["message"] == "START").expect("a START event");
    let exit = events.iter().find(|e| e["message"] == "EXIT").expect("an EXIT event");
    for event in [start, exit] {
        assert_eq!(event["level"], "INFO", "{event}");
        assert_eq!(event["target"], "warren::node", "{event}");
        assert_eq!(event["service"], "hello", "{event}");
        assert!(event["pid"].is_u64(), "{event}");
        assert!(event["timestamp"].is_string(), "{event}");
    }
    assert!(start["from"].as_str().is_some_and(|f| f.contains("127.0.0.1")), "{start}");
    assert!(exit["duration"].is_string(), "{exit}");

    curl_requests(&format!("http://{web}"));
    let access = lines_of(&log, 3);
    assert!(access.iter().all(|l| combined().is_match(l)), "{access:#?}");
    assert!(access[0].contains("\"GET /index.html HTTP/1.1\" 200 16 \"http://example.test/from\""), "{access:#?}");
    drop(up);
    std::fs::remove_dir_all(dir).unwrap();
}
