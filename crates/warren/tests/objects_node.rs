//! `builtin = "objects"` in warren.toml: `warren up` hosts the object server, with its JSON
//! front on `api` and its store in `data`.

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;

use support::{Server, T};
use warren_objects::examples::HelloClient;
use warren_rpc::{Connection, Target};

#[tokio::test]
async fn a_node_hosts_the_object_server_and_its_json_front() {
    let dir = std::env::temp_dir().join(format!("warren-objects-node-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let api = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let conf = dir.join("warren.toml");
    let data = dir.join("objects");
    std::fs::write(
        &conf,
        format!(
            "[[service]]\nname = \"objects\"\nbuiltin = \"objects\"\nmodel = \"thread\"\nport = 0\n\
             data = \"{}\"\napi = \"{api}\"\n",
            data.display()
        ),
    )
    .unwrap();
    let mut node = Server::spawn(&["up", "-c", conf.to_str().unwrap(), "--status", "off", "--registry", "off"]);
    assert!(node.ready.starts_with("warren: serving objects (tcp) under thread on "), "{}", node.ready);
    node.wait_stdout(|l| l.starts_with("warren: up: "), T).expect("the node comes up");

    let conn = Connection::connect(node.addr, T).await.unwrap();
    let hello = HelloClient::new(Target::on(&conn, "HelloServer").with_timeout(T));
    assert_eq!(hello.say_hello().await.unwrap(), "Hello World!");

    // The JSON front may come up a moment after the binary side: connect with a deadline.
    let until = std::time::Instant::now() + T;
    let mut s = loop {
        match TcpStream::connect(api) {
            Ok(s) => break s,
            Err(e) => assert!(std::time::Instant::now() < until, "no JSON front on {api}: {e}"),
        }
        std::thread::yield_now();
    };
    s.set_read_timeout(Some(T)).unwrap();
    write!(
        s,
        "POST /v1/objects/helloserver/sayHello HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n[]"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 ") && answer.ends_with("\"Hello World!\""), "{answer}");
    assert!(data.join("objects.db").exists() && data.join("admin.token").exists(), "the store is under data");
    node.stop_clean();
    let _ = std::fs::remove_dir_all(&dir);
}
