//! The object server through the binary: the course's examples over the Rust stubs, `warren
//! call`, HTTP and a Python client; the errors of both wire formats; administration through
//! the CLI; and hello under every server model that can host objects.

mod objects_support;
mod support;

use std::sync::{Arc, Mutex, mpsc};

use objects_support::{Http, Objects, Raw, connect, error_code, json_call, runtime, target};
use support::{T, command, run};
use warren_objects::examples::{
    AsyncServerClient, HelloClient, NoMoreItems, ObjectServerClient, StringEnumeratorClient, ThreadServerClient,
    WorkError, WorkListener, WorkListenerSkeleton, WorkRequest, WorkResult,
};
use warren_objects::{ADMIN_OBJECT, ObjectAdminClient, ObjectSpec};
use warren_rpc::wire::Outcome;
use warren_rpc::{CallError, Code};

/// `HelloServer` as a client at a version no server implements, and under another interface.
#[allow(dead_code)]
mod newer {
    #[warren_rpc::interface(name = "Hello", version = 2)]
    pub trait Hello: Send + Sync + 'static {
        #[rpc(name = "sayHello", idempotent)]
        fn say_hello(&self) -> String;
    }

    #[warren_rpc::interface(name = "Bonjour", version = 1)]
    pub trait Bonjour: Send + Sync + 'static {
        #[rpc(name = "sayHello")]
        fn say_hello(&self) -> String;
        #[rpc(name = "direBonjour")]
        fn dire_bonjour(&self) -> String;
    }
}

// ---- 1. The course's examples -----------------------------------------------------------------

#[test]
fn hello_server_answers_through_the_stub_the_cli_and_http() {
    let objects = Objects::start("hello", &[]);
    let rt = runtime();
    rt.block_on(async {
        let conn = connect(objects.addr).await;
        let hello = HelloClient::new(target(&conn, "HelloServer"));
        assert_eq!(hello.say_hello().await.unwrap(), "Hello World!");
        // Names are case-insensitive.
        let hello = HelloClient::new(target(&conn, "helloserver"));
        assert_eq!(hello.say_hello().await.unwrap(), "Hello World!");
    });

    let (status, out, err) = objects.call_cli("HelloServer", "sayHello", &[]);
    assert!(status.success(), "{status:?} {err}");
    assert_eq!(out.trim(), "\"Hello World!\"");

    let (status, body) = objects.post("HelloServer", "sayHello", "[]");
    assert_eq!((status, body.as_str()), (200, Some("Hello World!")));
}

#[test]
fn a_python_client_calls_hello_server_over_json() {
    let objects = Objects::start("python", &[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/objects_hello.py");
    let (host, port) = (objects.http.ip().to_string(), objects.http.port().to_string());
    let out = std::process::Command::new("python3")
        .args([script, &host, &port])
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}: {stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("Hello World!"), "{stdout}");
}

#[test]
fn get_list_returns_a_remote_enumerator_that_yields_goo_goo_gaa_gaa() {
    let objects = Objects::start("getlist", &[]);
    runtime().block_on(async {
        let conn = connect(objects.addr).await;
        let nifty = ObjectServerClient::new(target(&conn, "NiftyObjectServer"));
        let reference = nifty.get_list().await.unwrap();
        assert_eq!(reference.interface, "StringEnumerator");
        assert_eq!(reference.addr.as_deref(), Some(objects.addr.to_string().as_str()), "{reference:?}");
        let list = StringEnumeratorClient::new(target(&conn, &reference.object));
        let mut items = Vec::new();
        while list.has_more_items().await.unwrap() {
            items.push(list.next_item().await.unwrap());
            assert!(items.len() <= 4, "{items:?}");
        }
        assert_eq!(items, ["Goo", "Goo", "Gaa", "Gaa"]);
        assert_eq!(list.next_item().await.unwrap_err(), CallError::App(NoMoreItems));
        // Each call makes a new enumerator, and exported objects are not listed.
        let other = nifty.get_list().await.unwrap();
        assert_ne!(other.object, reference.object);
        assert_eq!(StringEnumeratorClient::new(target(&conn, &other.object)).next_item().await.unwrap(), "Goo");
    });
    assert!(!objects.names().iter().any(|n| n.starts_with("ref-")), "{:?}", objects.names());
}

#[test]
fn execute_squares_through_the_stub_the_cli_and_http() {
    let objects = Objects::start("execute", &[]);
    runtime().block_on(async {
        let conn = connect(objects.addr).await;
        let nifty = ObjectServerClient::new(target(&conn, "NiftyObjectServer"));
        let squares = nifty.execute(WorkRequest::Squares { n: 5 }).await.unwrap();
        assert_eq!(squares, WorkResult::Squares(vec![0, 1, 4, 9, 16]));
        let date = nifty.get_date().await.unwrap();
        humantime::parse_rfc3339(&date).unwrap_or_else(|e| panic!("getDate {date:?}: {e}"));
    });
    let (status, out, err) = objects.call_cli("NiftyObjectServer", "execute", &[r#"{"Squares":{"n":5}}"#]);
    assert!(status.success(), "{err}");
    assert_eq!(out.trim(), r#"{"Squares":[0,1,4,9,16]}"#);
    let (status, body) = objects.post("NiftyObjectServer", "execute", r#"[{"Squares":{"n":5}}]"#);
    assert_eq!(status, 200);
    assert_eq!(body, serde_json::json!({"Squares": [0, 1, 4, 9, 16]}));
}

/// The client's `WorkListener`: hands what it hears to the test.
type Heard = (WorkRequest, Result<WorkResult, WorkError>);

struct Listener(Mutex<mpsc::Sender<Heard>>);

impl WorkListener for Listener {
    fn work_completed(&self, request: WorkRequest, result: Result<WorkResult, WorkError>) {
        let _ = self.0.lock().unwrap().send((request, result));
    }
}

/// Requests pipelined in one write are answered in order, whether the object answers at once
/// (`HelloServer`, inline) or on another thread (`NiftyObjectServer`, per-invocation).
#[test]
fn pipelined_json_calls_are_answered_in_order() {
    use std::io::{Read, Write};
    let objects = Objects::start("pipelined", &[]);
    let post = |path: &str, last: bool| {
        let close = if last { "Connection: close\r\n" } else { "" };
        format!("POST /v1/objects/{path} HTTP/1.1\r\nHost: t\r\n{close}Content-Length: 2\r\n\r\n[]")
    };
    let requests = [
        post("HelloServer/sayHello", false),
        post("NiftyObjectServer/getDate", false),
        post("HelloServer/sayHello", false),
        post("HelloServer/sayHello", true),
    ]
    .concat();
    let mut stream = std::net::TcpStream::connect(objects.http).unwrap();
    stream.set_read_timeout(Some(T)).unwrap();
    stream.write_all(requests.as_bytes()).unwrap();
    let mut answers = String::new();
    stream.read_to_string(&mut answers).expect("four answers, then the close");
    let bodies: Vec<&str> = answers.split("HTTP/1.1 ").skip(1).map(|r| r.rsplit("\r\n\r\n").next().unwrap()).collect();
    assert_eq!(answers.matches("HTTP/1.1 200 ").count(), 4, "{answers}");
    assert_eq!(bodies.len(), 4, "{answers}");
    assert_eq!([bodies[0], bodies[2], bodies[3]], ["\"Hello World!\""; 3], "{answers}");
    assert!(bodies[1].starts_with('"') && !bodies[1].contains("Hello"), "{answers}");
}

#[test]
fn async_execute_calls_back_the_listener_the_client_exported() {
    let objects = Objects::start("async", &[]);
    let (heard, hearing) = mpsc::channel();
    runtime().block_on(async {
        let conn = connect(objects.addr).await;
        let listener = conn.export(Arc::new(WorkListenerSkeleton(Listener(Mutex::new(heard)))));
        assert_eq!(listener.addr, None, "a callback lives on the client's connection");
        let server = AsyncServerClient::new(target(&conn, "AsyncServer"));
        // Answered at once; the result comes later, as a call from the server.
        server.async_execute(WorkRequest::Squares { n: 4 }, listener.clone()).await.unwrap();
        server.async_execute(WorkRequest::Squares { n: 2_000_000 }, listener).await.unwrap();
        let mut results = Vec::new();
        for _ in 0..2 {
            let hearing = &hearing;
            let got = tokio::task::block_in_place(|| hearing.recv_timeout(T)).expect("the listener was called back");
            results.push(got);
        }
        results.sort_by_key(|(request, _)| format!("{request:?}"));
        assert_eq!(results[0].0, WorkRequest::Squares { n: 2_000_000 });
        assert_eq!(results[0].1, Err(WorkError::TooLarge { max: 1_000_000 }));
        assert_eq!(results[1].0, WorkRequest::Squares { n: 4 });
        assert_eq!(results[1].1, Ok(WorkResult::Squares(vec![0, 1, 4, 9])));
    });
}

#[test]
fn which_thread_names_a_pool_thread() {
    let objects = Objects::start("threads", &[]);
    runtime().block_on(async {
        let conn = connect(objects.addr).await;
        let threads = ThreadServerClient::new(target(&conn, "RMIThreadServer"));
        for _ in 0..4 {
            let info = threads.which_thread(0).await.unwrap();
            let n = info.name.strip_prefix("RMIThreadServer-pool-").unwrap_or_else(|| panic!("{info:?}"));
            assert!(n.parse::<usize>().is_ok_and(|n| n < 4), "the default pool has 4 threads: {info:?}");
        }
    });
}

// ---- 4. Errors ----------------------------------------------------------------------------------

#[test]
fn unknown_objects_and_methods_are_told_in_both_formats() {
    let objects = Objects::start("unknown", &[]);
    let (status, body) = objects.post("Nobody", "sayHello", "[]");
    assert_eq!((status, error_code(&body)), (404, "no_such_object"), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("Nobody"), "{body}");
    let (status, body) = objects.post("HelloServer", "sayGoodbye", "[]");
    assert_eq!((status, error_code(&body)), (404, "no_such_method"), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("sayGoodbye"), "{body}");
    let (status, body) = Http::connect(objects.http).request("GET", "/v1/objects/Nobody", &[], b"");
    assert_eq!((status, error_code(&body)), (404, "no_such_object"), "{body}");
    let (status, body) = Http::connect(objects.http).request("GET", "/v2/elsewhere", &[], b"");
    assert_eq!(status, 404, "{body}");

    runtime().block_on(async {
        let conn = connect(objects.addr).await;
        let e = HelloClient::new(target(&conn, "Nobody")).say_hello().await.unwrap_err();
        assert_eq!(e.code(), Some(Code::NoSuchObject), "{e}");
        let e = newer::BonjourClient::new(target(&conn, "HelloServer")).say_hello().await.unwrap_err();
        assert_eq!(e.code(), Some(Code::WrongInterface), "{e}");
    });
    let (status, _, err) = objects.call_cli("HelloServer", "sayGoodbye", &[]);
    assert!(!status.success());
    assert!(err.contains("no_such_method"), "{err}");
}

#[test]
fn wrong_arguments_are_bad_arguments_with_a_clear_message() {
    let objects = Objects::start("badargs", &[]);
    for (method, body, says) in [
        ("sayHello", "[1]", "sayHello takes no arguments"),
        ("execute", "[]", "execute takes 1 argument, not 0"),
        ("execute", r#"[{"Squares":{"n":1}}, 2]"#, "execute takes 1 argument, not 2"),
        ("execute", r#"["x"]"#, "execute: "),
        ("execute", r#"{"Squares":{"n":1}}"#, "the arguments are a JSON array"),
        ("execute", "not json", "the arguments are a JSON array"),
    ] {
        let object = if method == "sayHello" { "HelloServer" } else { "NiftyObjectServer" };
        let (status, answer) = objects.post(object, method, body);
        assert_eq!((status, error_code(&answer)), (400, "bad_arguments"), "{method} {body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{method} {body}: {message:?} should say {says:?}");
    }
    let (status, _, err) = objects.call_cli("NiftyObjectServer", "execute", &["1", "2"]);
    assert!(!status.success());
    assert!(err.contains("bad_arguments: execute takes 1 argument, not 2"), "{err}");
    let (status, _, err) = objects.call_cli("NiftyObjectServer", "execute", &["{not json"]);
    assert!(!status.success());
    assert!(err.contains("argument 1") && err.contains("not JSON"), "{err}");
}

#[test]
fn a_newer_version_or_another_interface_is_refused_not_hung() {
    let objects = Objects::start("version", &[]);
    runtime().block_on(async {
        let conn = connect(objects.addr).await;
        let e = newer::HelloClient::new(target(&conn, "HelloServer")).say_hello().await.unwrap_err();
        assert_eq!(e.code(), Some(Code::VersionMismatch), "{e}");
        assert!(e.to_string().contains("version 1") && e.to_string().contains("version 2"), "{e}");
    });
    let mut http = Http::connect(objects.http);
    let path = "/v1/objects/HelloServer/sayHello";
    let (status, body) = http.request("POST", path, &[("Warren-Interface", "Hello"), ("Warren-Version", "2")], b"[]");
    assert_eq!((status, error_code(&body)), (409, "version_mismatch"), "{body}");
    let (status, body) = http.request("POST", path, &[("Warren-Interface", "Hello"), ("Warren-Version", "1")], b"[]");
    assert_eq!((status, body.as_str()), (200, Some("Hello World!")));
    let (status, body) = http.request("POST", path, &[("Warren-Interface", "Bonjour")], b"[]");
    assert_eq!((status, error_code(&body)), (409, "wrong_interface"), "{body}");
    let (status, body) = http.request("POST", path, &[("Warren-Version", "two")], b"[]");
    assert_eq!((status, error_code(&body)), (400, "bad_arguments"), "{body}");
}

#[test]
fn the_methods_own_error_is_typed_on_the_stub_and_422_over_http() {
    let objects = Objects::start("apperror", &[]);
    runtime().block_on(async {
        let conn = connect(objects.addr).await;
        let nifty = ObjectServerClient::new(target(&conn, "NiftyObjectServer"));
        let e = nifty.execute(WorkRequest::Squares { n: 1_000_001 }).await.unwrap_err();
        assert_eq!(e, CallError::App(WorkError::TooLarge { max: 1_000_000 }));
    });
    let (status, body) = objects.post("NiftyObjectServer", "execute", r#"[{"Squares":{"n":1000001}}]"#);
    assert_eq!(status, 422);
    assert_eq!(body, serde_json::json!({"error": {"code": "application", "value": {"TooLarge": {"max": 1000000}}}}));
    let (status, _, err) = objects.call_cli("NiftyObjectServer", "execute", &[r#"{"Squares":{"n":1000001}}"#]);
    assert!(!status.success());
    assert!(err.contains(r#"execute failed: {"TooLarge":{"max":1000000}}"#), "{err}");
}

#[test]
fn a_malformed_frame_closes_only_its_connection() {
    let objects = Objects::start("malformed", &[]);
    let mut good = Raw::connect(objects.addr);
    good.send(&json_call(1, "HelloServer", "sayHello", "[]", 0));
    assert_eq!(good.reply(T).unwrap().outcome, Outcome::Ok(b"\"Hello World!\"".to_vec()));
    for (what, bytes) in [
        ("a body postcard cannot read", vec![b'W', b'O', 1, 0, 0, 0, 3, 9, 9, 9]),
        ("another protocol", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("another wire version", vec![b'W', b'O', 2, 0, 0, 0, 1, 2]),
    ] {
        let mut bad = Raw::connect(objects.addr);
        bad.send(&bytes);
        assert!(bad.closed(T), "{what}: the connection must close");
        // The other connection is still served.
        good.send(&json_call(2, "HelloServer", "sayHello", "[]", 0));
        assert_eq!(good.reply(T).unwrap().id, 2, "{what}");
    }
}

#[test]
fn http_refuses_large_and_chunked_bodies() {
    let objects = Objects::start("httpbodies", &[]);
    let mut http = Http::connect(objects.http);
    let big = vec![b' '; (1 << 20) + 1];
    let (status, body) = http.request("POST", "/v1/objects/HelloServer/sayHello", &[], &big);
    assert_eq!(status, 413, "{body}");
    // Exactly 1 MiB is still a body (of blanks: no arguments).
    let mut http = Http::connect(objects.http);
    let (status, body) = http.request("POST", "/v1/objects/HelloServer/sayHello", &[], &big[1..]);
    assert_eq!((status, body.as_str()), (200, Some("Hello World!")));

    let mut http = Http::connect(objects.http);
    use std::io::Write;
    http.stream
        .write_all(b"POST /v1/objects/HelloServer/sayHello HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n[]\r\n0\r\n\r\n")
        .unwrap();
    let (status, body) = http.answer(T).expect("an answer");
    assert_eq!((status, error_code(&body)), (411, "protocol"), "{body}");
    assert!(http.answer(T).is_none(), "the connection closes after 411");
    // Others are still served.
    assert_eq!(objects.post("HelloServer", "sayHello", "[]").0, 200);
}

// ---- 5. Administration ------------------------------------------------------------------------

#[test]
fn objects_are_added_listed_called_and_removed_through_the_cli() {
    let objects = Objects::start("admin", &[]);
    let (status, out, err) = objects.admin(&["classes"]);
    assert!(status.success(), "{err}");
    for class in ["async", "counter", "hello", "nifty", "threads"] {
        assert!(out.lines().any(|l| l.starts_with(class)), "{class} in\n{out}");
    }
    let before = objects.names();
    assert_eq!(
        before,
        ["AsyncServer", "HelloServer", "NiftyObjectServer", "RMIThreadServer", "warren.objects"],
        "the course's objects and the admin object"
    );
    objects.add("Greeter", "hello", "pool:2:8", false);
    let (status, out, _) = objects.admin(&["ls"]);
    assert!(status.success());
    let line = out.lines().find(|l| l.starts_with("Greeter ")).unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("hello") && line.contains("pool:2:8") && line.contains("transient"), "{line}");
    assert_eq!(objects.post("greeter", "sayHello", "[]").0, 200);

    let (status, out, err) = objects.admin(&["rm", "GREETER"]);
    assert!(status.success(), "{err}");
    assert_eq!(out.trim(), "removed Greeter");
    assert_eq!(objects.names(), before);
    assert_eq!(objects.post("Greeter", "sayHello", "[]").0, 404);
    let (status, _, err) = objects.admin(&["rm", "Greeter"]);
    assert!(!status.success());
    assert!(err.contains("no_such_object"), "{err}");

    // Bad specifications are told.
    for (args, says) in [
        (&["add", "x", "--class", "teapot"][..], "no class \"teapot\""),
        (&["add", "x", "--class", "hello", "--policy", "threads"], "unknown policy"),
        (&["add", "x y", "--class", "hello"], "object name"),
    ] {
        let (status, _, err) = objects.admin(args);
        assert!(!status.success(), "{args:?}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert_eq!(objects.names(), before);
}

#[test]
fn a_wrong_or_missing_token_changes_nothing() {
    let objects = Objects::start("token", &[]);
    let before = objects.names();
    let wrong = objects.data.join("wrong.token");
    std::fs::write(&wrong, "not-the-token\n").unwrap();
    for args in [&["add", "Intruder", "--class", "hello"][..], &["rm", "HelloServer"]] {
        let (status, _, err) = objects.admin_with(args, &wrong);
        assert!(!status.success(), "{args:?}");
        assert!(err.contains("unauthenticated: wrong admin token"), "{args:?}: {err}");
        let (status, _, err) = objects.admin_with(args, &objects.data.join("missing.token"));
        assert!(!status.success(), "{args:?}");
        assert!(err.contains("missing.token"), "{args:?}: {err}");
    }
    // Straight to the admin object, with no token at all.
    runtime().block_on(async {
        let conn = connect(objects.addr).await;
        let admin = ObjectAdminClient::new(target(&conn, ADMIN_OBJECT));
        let spec = ObjectSpec {
            name: "Intruder".into(),
            class: "hello".into(),
            policy: "per-object".into(),
            persistent: false,
        };
        let e = admin.add(String::new(), spec).await.unwrap_err();
        assert!(matches!(&e, CallError::App(e) if e.code == Code::Unauthenticated), "{e:?}");
        let e = admin.rm(String::new(), "HelloServer".into()).await.unwrap_err();
        assert!(matches!(&e, CallError::App(e) if e.code == Code::Unauthenticated), "{e:?}");
    });
    // Nor over HTTP, where the token is an argument like any other.
    let (status, body) = objects.post(ADMIN_OBJECT, "rm", r#"["guess", "HelloServer"]"#);
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["value"]["code"], "unauthenticated", "{body}");
    assert_eq!(objects.names(), before);
    assert_eq!(objects.post("HelloServer", "sayHello", "[]").0, 200);
}

#[test]
fn reserved_and_duplicate_names_are_refused() {
    let objects = Objects::start("names", &[]);
    let before = objects.names();
    for (args, says) in [
        (&["add", "warren.mine", "--class", "hello"][..], "permission_denied"),
        (&["add", "Warren.Objects", "--class", "hello"], "permission_denied"),
        (&["rm", "warren.objects"], "permission_denied"),
        (&["rm", "WARREN.OBJECTS"], "permission_denied"),
        (&["add", "helloserver", "--class", "hello"], "exists"),
        (&["add", "HELLOSERVER", "--class", "nifty"], "exists"),
    ] {
        let (status, _, err) = objects.admin(args);
        assert!(!status.success(), "{args:?}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    objects.add("Twice", "counter", "per-object", false);
    let (status, _, err) = objects.admin(&["add", "tWICE", "--class", "hello"]);
    assert!(!status.success());
    assert!(err.contains("exists"), "{err}");
    let mut expected = before.clone();
    expected.push("Twice".into());
    expected.sort();
    assert_eq!(objects.names(), expected);
    // The admin object still answers, and the first Twice is still a counter.
    let (status, body) = objects.post("twice", "add", "[2]");
    assert_eq!((status, body.as_i64()), (200, Some(2)));
}

// ---- 7. Models ----------------------------------------------------------------------------------

type Hellos = Vec<tokio::task::JoinHandle<Result<String, CallError<warren_rpc::Never>>>>;

fn hellos(conn: &warren_rpc::Connection) -> Hellos {
    let hello = HelloClient::new(target(conn, "HelloServer"));
    (0..4)
        .map(|_| {
            let hello = hello.clone();
            tokio::spawn(async move { hello.say_hello().await })
        })
        .collect()
}

async fn check_hellos(calls: Hellos, model: &str) {
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), "Hello World!", "{model}");
    }
}

fn hello_under(model: &str) {
    let objects = Objects::start(&format!("model-{model}"), &["--model", model]);
    assert!(objects.server.ready.contains(&format!("under {model} on ")), "{}", objects.server.ready);
    runtime().block_on(async {
        // Several calls in flight on each of two connections; at once, but for `iterative`,
        // which serves one connection after the other.
        let first = connect(objects.addr).await;
        let mut calls = hellos(&first);
        if model == "iterative" {
            check_hellos(calls, model).await;
            drop(first);
            calls = Vec::new();
        }
        let second = connect(objects.addr).await;
        calls.extend(hellos(&second));
        check_hellos(calls, model).await;
    });
    let (status, body) = objects.post("HelloServer", "sayHello", "[]");
    assert_eq!((status, body.as_str()), (200, Some("Hello World!")), "{model}");
    objects.server.stop_clean();
}

mod models {
    #[test]
    fn iterative() {
        super::hello_under("iterative")
    }
    #[test]
    fn thread() {
        super::hello_under("thread")
    }
    #[test]
    fn pool() {
        super::hello_under("pool")
    }
    #[test]
    fn event() {
        super::hello_under("event")
    }
    #[test]
    fn green() {
        super::hello_under("green")
    }
    #[test]
    fn hybrid() {
        super::hello_under("hybrid")
    }
}

#[test]
fn fork_and_prefork_are_refused_with_the_reason() {
    for model in ["fork", "prefork"] {
        let data = objects_support::fresh_dir(&format!("model-{model}"));
        let (status, out, err) = run(
            command(&[
                "objects",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--data",
                data.to_str().unwrap(),
                "--model",
                model,
            ]),
            b"",
            T,
        );
        assert!(!status.success(), "{model}: {status:?}");
        assert!(!out.contains("warren: serving"), "{model}: {out}");
        assert!(
            err.contains(&format!("--model {model}")) && err.contains("objects live in one process"),
            "{model}: {err}"
        );
    }
}
