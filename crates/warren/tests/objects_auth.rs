//! `warren objects serve --callers-token-file`: only callers presenting the token reach any
//! object, over the binary protocol (an `Auth` frame) and over HTTP (`Authorization: Bearer`).

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use support::{Server, T};
use warren_objects::examples::HelloClient;
use warren_rpc::{Code, Connection, Target};

fn http_post(addr: SocketAddr, path: &str, auth: Option<&str>) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let auth = auth.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(s, "POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 2\r\nConnection: close\r\n\r\n[]").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
}

#[tokio::test]
async fn only_callers_with_the_token_reach_an_object() {
    let dir = std::env::temp_dir().join(format!("warren-objects-auth-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let token_file = dir.join("callers.token");
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700).create(&dir).unwrap();
    std::fs::write(&token_file, "s3cret\n").unwrap();
    let server = Server::spawn(&[
        "objects",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--store",
        "none",
        "--data",
        dir.to_str().unwrap(),
        "--callers-token-file",
        token_file.to_str().unwrap(),
    ]);
    let http: SocketAddr =
        server.ready.split("http ").nth(1).unwrap().split(&[',', ')'][..]).next().unwrap().parse().unwrap();

    let stranger = Connection::connect(server.addr, T).await.unwrap();
    let e = HelloClient::new(Target::on(&stranger, "HelloServer")).say_hello().await.unwrap_err();
    assert_eq!(e.code(), Some(Code::Unauthenticated), "{e}");
    stranger.authenticate("guess").await.unwrap();
    let e = HelloClient::new(Target::on(&stranger, "HelloServer")).say_hello().await.unwrap_err();
    assert_eq!(e.code(), Some(Code::Unauthenticated), "a wrong token admits nothing: {e}");

    let friend = Connection::connect(server.addr, T).await.unwrap();
    friend.authenticate("s3cret").await.unwrap();
    assert_eq!(HelloClient::new(Target::on(&friend, "HelloServer")).say_hello().await.unwrap(), "Hello World!");

    let path = "/v1/objects/HelloServer/sayHello";
    assert!(http_post(http, path, None).starts_with("HTTP/1.1 401 "));
    assert!(http_post(http, path, Some("guess")).starts_with("HTTP/1.1 401 "));
    let ok = http_post(http, path, Some("s3cret"));
    assert!(ok.starts_with("HTTP/1.1 200 ") && ok.ends_with("\"Hello World!\""), "{ok}");
    server.stop_clean();
    let _ = std::fs::remove_dir_all(&dir);
}
