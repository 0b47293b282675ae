//! only_from, no_access, access_times and the three banners.

mod support;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use support::{TestNode, exchange};

fn from(ip: [u8; 4], to: SocketAddr) -> String {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((ip, 0)).into()).unwrap();
    socket.connect(&to.into()).unwrap();
    let mut stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = String::new();
    let _ = std::io::Read::read_to_string(&mut stream, &mut out);
    out
}

fn banners() -> (tempdir::Dir, String) {
    let dir = tempdir::Dir::new();
    for (name, text) in [("always", "hello\r\n"), ("ok", "welcome\r\n"), ("no", "go away\r\n")] {
        std::fs::write(dir.path.join(name), text).unwrap();
    }
    let d = dir.path.display();
    let toml = format!("banner = \"{d}/always\"\nbanner_success = \"{d}/ok\"\nbanner_fail = \"{d}/no\"\n");
    (dir, toml)
}

#[test]
fn only_from_and_no_access_most_specific_wins_with_banners() {
    let (_dir, banner) = banners();
    let node = TestNode::start(&format!(
        r#"
[[service]]
name = "guarded"
bind = "0.0.0.0"
port = 0
only_from = ["127.0.0.0/8"]
no_access = ["127.0.0.2"]
server = "/bin/echo"
server_args = ["served"]
{banner}"#
    ));
    let port = node.addr("guarded").port();
    let to = SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(from([127, 0, 0, 1], to), "hello\r\nwelcome\r\nserved\n");
    assert_eq!(from([127, 0, 0, 2], to), "hello\r\ngo away\r\n", "no_access names the address: more specific");
    assert_eq!(from([127, 0, 0, 3], to), "hello\r\nwelcome\r\nserved\n");
    assert_eq!(node.status().service("guarded").unwrap().refused, 1);
}

#[test]
fn empty_only_from_admits_nobody() {
    let node = TestNode::start("[[service]]\nname = \"closed\"\nport = 0\nonly_from = []\nserver = \"/bin/echo\"\n");
    assert_eq!(exchange(node.addr("closed"), b""), "");
}

#[test]
fn access_times_outside_now_refuse() {
    let now = warren_node::access::local_minute();
    let hm = |m: u16| format!("{:02}:{:02}", (m / 60) % 24, m % 60);
    let (later, much_later) = ((now + 120) % 1440, (now + 180) % 1440);
    let open_now = format!("{}-{}", hm((now + 1380) % 1440), hm((now + 60) % 1440));
    let node = TestNode::start(&format!(
        r#"
[[service]]
name = "closed"
port = 0
access_times = ["{}-{}"]
server = "/bin/echo"
server_args = ["served"]
[[service]]
name = "open"
port = 0
access_times = ["{open_now}"]
server = "/bin/echo"
server_args = ["served"]
"#,
        hm(later),
        hm(much_later)
    ));
    assert_eq!(exchange(node.addr("closed"), b""), "");
    assert_eq!(exchange(node.addr("open"), b""), "served\n");
}

/// A private directory removed on drop.
mod tempdir {
    pub struct Dir {
        pub path: std::path::PathBuf,
    }

    impl Dir {
        pub fn new() -> Dir {
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!("warren-node-test-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&path).unwrap();
            Dir { path }
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
