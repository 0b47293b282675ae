//! The chat as users see it: welcome, names, channels, messages, modes, leaving.

use super::*;

#[test]
fn nothing_before_the_first_line_then_a_welcome() {
    let mut sim = Sim::new();
    let a = sim.connect();
    assert_eq!(sim.take(a), "");
    sim.input(a, br#"{"cmd":"hel"#);
    assert_eq!(sim.take(a), "", "no answer to a partial line");
    sim.input(a, b"lo\",\"version\":1}\r\n");
    assert_eq!(sim.events(a), [Event::Welcome { version: 1, nick: "guest1".into() }]);
    let b = sim.connect();
    sim.line(b, "");
    assert!(sim.take(b).starts_with("* welcome to warren chat (protocol 1); you are guest2."));
    assert_eq!(sim.conns[&b].session.mode(), Some(Mode::Plain));
}

#[test]
fn nicknames_are_unique_and_guests_skip_taken_names() {
    let mut sim = Sim::new();
    let (a, b) = (sim.json_client(), sim.json_client());
    sim.line(a, r#"{"cmd":"nick","nick":"Bob"}"#);
    assert_eq!(sim.events(a), [Event::Nick { old: "guest1".into(), new: "Bob".into() }]);
    sim.line(b, r#"{"cmd":"nick","nick":"bob"}"#);
    assert_eq!(error_of(&sim.events(b)), "nickname bob is already in use");
    sim.line(b, r#"{"cmd":"nick","nick":"guest1"}"#);
    assert!(matches!(&sim.events(b)[..], [Event::Nick { .. }]), "a released name is free again");
    for bad in ["two words", "#chan", "", "abcdefghijklmnopqrstu"] {
        sim.line(b, &Command::Nick { nick: bad.into() }.to_json());
        assert!(error_of(&sim.events(b)).starts_with("invalid nickname"), "{bad:?}");
    }
    sim.line(a, r#"{"cmd":"nick","nick":"guest4"}"#);
    sim.events(a);
    let c = sim.connect();
    sim.line(c, "");
    assert!(sim.take(c).contains("you are guest3"));
    let d = sim.connect();
    sim.line(d, "");
    assert!(sim.take(d).contains("you are guest5"), "guest4 was taken by hand");
}

#[test]
fn join_list_leave() {
    let mut sim = Sim::new();
    let (a, b, c) = (sim.json_client(), sim.json_client(), sim.json_client());
    sim.line(a, r##"{"cmd":"join","channel":"#Rust"}"##);
    assert_eq!(
        sim.events(a),
        [
            Event::Joined { channel: "#rust".into(), nick: "guest1".into(), users: 1 },
            Event::Names { channel: "#rust".into(), users: 1, nicks: vec!["guest1".into()] },
        ]
    );
    sim.line(b, r#"{"cmd":"join","channel":"rust"}"#);
    let joined = Event::Joined { channel: "#rust".into(), nick: "guest2".into(), users: 2 };
    assert_eq!(sim.events(a), std::slice::from_ref(&joined));
    assert_eq!(sim.events(b)[0], joined);
    sim.line(c, r##"{"cmd":"join","channel":"#go"}"##);
    sim.line(c, r#"{"cmd":"list"}"#);
    let info = |channel: &str, users| ChannelInfo { channel: channel.into(), users };
    assert_eq!(sim.events(c).last().unwrap(), &Event::List { channels: vec![info("#go", 1), info("#rust", 2)] });
    assert!(sim.events(a).is_empty(), "#go is none of a's business");

    sim.line(b, r#"{"cmd":"leave"}"#);
    let left = Event::Left { channel: "#rust".into(), nick: "guest2".into(), reason: LeaveReason::Leave };
    assert_eq!(sim.events(a), std::slice::from_ref(&left));
    assert_eq!(sim.events(b), [left]);
    sim.line(b, r#"{"cmd":"leave"}"#);
    assert_eq!(error_of(&sim.events(b)), "you are on no channel: /join #name first");
    sim.line(c, r##"{"cmd":"leave","channel":"#rust"}"##);
    assert_eq!(error_of(&sim.events(c)), "you are not on #rust");
    sim.line(c, r##"{"cmd":"leave","channel":"#GO"}"##);
    sim.line(c, r#"{"cmd":"list"}"#);
    assert_eq!(
        sim.events(c).last().unwrap(),
        &Event::List { channels: vec![info("#rust", 1)] },
        "empty channels vanish"
    );
}

#[test]
fn messages_reach_the_channel_and_nobody_else() {
    let mut sim = Sim::new();
    let (a, b, c) = (sim.json_client(), sim.json_client(), sim.json_client());
    for (id, channel) in [(a, "#a"), (b, "#a"), (c, "#b")] {
        sim.line(id, &Command::Join { channel: channel.into() }.to_json());
    }
    for id in [a, b, c] {
        sim.events(id);
    }
    sim.line(a, r#"{"cmd":"say","text":"hi"}"#);
    let hi = Event::Message { channel: "#a".into(), from: "guest1".into(), text: "hi".into() };
    assert_eq!(sim.events(a), std::slice::from_ref(&hi), "the sender gets its echo");
    assert_eq!(sim.events(b), [hi]);
    assert!(sim.events(c).is_empty());

    // a joins #b too: it becomes current; a message can still name #a.
    sim.line(a, r##"{"cmd":"join","channel":"#b"}"##);
    sim.events(a);
    sim.events(c);
    sim.line(a, r#"{"cmd":"say","text":"to b"}"#);
    assert!(sim.events(b).is_empty());
    assert!(matches!(&sim.events(c)[..], [Event::Message { channel, .. }] if channel == "#b"));
    sim.line(a, r##"{"cmd":"say","channel":"#a","text":"to a"}"##);
    assert!(matches!(&sim.events(b)[..], [Event::Message { channel, .. }] if channel == "#a"));
    assert!(sim.events(c).is_empty());
    sim.line(c, r##"{"cmd":"say","channel":"#a","text":"intrude"}"##);
    assert_eq!(error_of(&sim.events(c)), "you are not on #a");

    // Joining #a again makes it current, telling only a; leaving it makes #b current again.
    sim.events(a);
    sim.line(a, r##"{"cmd":"join","channel":"#a"}"##);
    assert_eq!(sim.events(a), [Event::Joined { channel: "#a".into(), nick: "guest1".into(), users: 2 }]);
    assert!(sim.events(b).is_empty());
    sim.line(a, r#"{"cmd":"leave"}"#);
    sim.line(a, r#"{"cmd":"say","text":"back on b"}"#);
    assert!(sim.events(c).iter().any(|e| matches!(e, Event::Message { channel, .. } if channel == "#b")));
}

#[test]
fn nick_changes_reach_channel_neighbours_once() {
    let mut sim = Sim::new();
    let (a, b, c) = (sim.json_client(), sim.json_client(), sim.json_client());
    for (id, channel) in [(a, "#x"), (a, "#y"), (b, "#x"), (b, "#y")] {
        sim.line(id, &Command::Join { channel: channel.into() }.to_json());
    }
    sim.events(b);
    sim.line(a, r#"{"cmd":"nick","nick":"alice"}"#);
    assert_eq!(sim.events(b), [Event::Nick { old: "guest1".into(), new: "alice".into() }]);
    assert!(sim.events(c).is_empty());
    assert!(sim.logs.iter().any(|(l, s)| *l == Level::Debug && s == "chat: guest1 is now alice"));
}

#[test]
fn disconnect_and_quit_tell_the_others() {
    let mut sim = Sim::new();
    let (a, b, c) = (sim.json_client(), sim.json_client(), sim.json_client());
    for id in [a, b, c] {
        sim.line(id, r##"{"cmd":"join","channel":"#a"}"##);
    }
    sim.events(a);
    sim.read_closed(b);
    assert!(sim.is_closed(b));
    assert_eq!(sim.events(a), [Event::Left { channel: "#a".into(), nick: "guest2".into(), reason: LeaveReason::Quit }]);
    sim.line(c, r#"{"cmd":"quit"}"#);
    assert_eq!(sim.events(c).last().unwrap(), &Event::Bye { message: "bye".into() });
    assert!(sim.is_closed(c));
    assert!(matches!(&sim.events(a)[..], [Event::Left { reason: LeaveReason::Quit, .. }]));
    sim.line(a, r#"{"cmd":"nick","nick":"guest2"}"#);
    assert!(matches!(&sim.events(a)[..], [Event::Nick { .. }]), "a gone user's name is free");
    let Event::Stats { users, peak_users, channels, .. } = sim.hub.stats(sim.now) else { unreachable!() };
    assert_eq!((users, peak_users, channels), (1, 3, 1));
}

#[test]
fn plain_text_mode_and_json_mode_share_a_channel() {
    let mut sim = Sim::new();
    let p = sim.connect();
    sim.line(p, "/nick bob");
    let text = sim.take(p);
    assert!(text.starts_with("* welcome"), "the welcome comes first: {text}");
    assert!(text.ends_with("* guest1 is now known as bob\n"));
    let j = sim.json_client();
    sim.line(p, "/JOIN #a");
    assert_eq!(sim.take(p), "* bob joined #a (1 user)\n* on #a (1 user): bob\n");
    sim.line(j, r##"{"cmd":"join","channel":"#a"}"##);
    assert_eq!(sim.take(p), "* guest2 joined #a (2 users)\n");
    sim.events(j);
    sim.line(p, "hello all");
    sim.line(p, "//slash");
    assert_eq!(sim.take(p), "[#a] <bob> hello all\n[#a] <bob> /slash\n");
    let e = sim.events(j);
    assert_eq!(e[0], Event::Message { channel: "#a".into(), from: "bob".into(), text: "hello all".into() });
    sim.line(j, r#"{"cmd":"say","text":"tab\there \u001b[31m"}"#);
    assert_eq!(sim.take(p), "[#a] <guest2> tab here  [31m\n", "control characters never reach a terminal");
    sim.line(p, "/list");
    assert_eq!(sim.take(p), "* 1 channel:\n*   #a (2 users)\n");
    sim.line(p, "/help");
    assert!(sim.take(p).lines().count() >= 8);
    sim.line(p, "/stats");
    assert!(sim.take(p).starts_with("* stats: 2 users now (peak 2), 1 channel,"));
    sim.line(p, "/leave");
    sim.line(p, "/quit");
    assert_eq!(sim.take(p), "* bob left #a\n* bye\n");
    assert!(sim.is_closed(p));
}

#[test]
fn a_script_in_one_write_gets_every_answer_before_bye() {
    let mut sim = Sim::new();
    let p = sim.connect();
    sim.input(p, b"/nick demo\n/join #demo\nhello, channel\n/quit\n/nick ignored\n");
    sim.read_closed(p);
    assert_eq!(
        sim.take(p),
        "* welcome to warren chat (protocol 1); you are guest1. /help lists the commands\n\
         * guest1 is now known as demo\n\
         * demo joined #demo (1 user)\n\
         * on #demo (1 user): demo\n\
         [#demo] <demo> hello, channel\n\
         * bye\n"
    );
    assert!(sim.is_closed(p));
    // Without /quit, and without a final newline: the half-close lets the user go the same way.
    let q = sim.connect();
    sim.input(q, b"/join #x\nlast words");
    sim.read_closed(q);
    assert!(sim.take(q).ends_with("[#x] <guest2> last words\n* bye\n"));
    assert!(sim.is_closed(q));
    assert!(sim.logs.iter().any(|(_, l)| l == "chat: demo joined #demo"));
    assert!(sim.logs.iter().any(|(_, l)| l == "chat: demo quit"), "logged once the hub lets go");
}
