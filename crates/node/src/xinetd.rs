//! xinetd's configuration format: `xinetd.conf` with `defaults`, `service <name> { … }`,
//! `include` and `includedir`, attributes set with `=`, `+=` and `-=` (xinetd.conf(5)).
//!
//! Sections are collected first and built afterwards, so that `defaults` applies to every
//! service wherever it appears, as in xinetd. An unknown attribute is an error naming the file
//! and line; an attribute with no effect on Linux today is reported in [`Config::ignored`], as
//! are the sections xinetd starts past a warning of its own or none (a second section with an
//! id already taken, an internal service this node lacks).

use std::path::{Path, PathBuf};

use crate::attrs::{self, Attrs, Built, Format, Op};
use crate::config::{Config, Service, StatusAddr};
use crate::load::{LoadError, Loaded};

/// One `name op words` line, with where it was.
#[derive(Debug)]
struct Setting {
    name: String,
    op: Op,
    words: Vec<String>,
    line: usize,
}

/// A section as written.
#[derive(Debug)]
struct Section {
    /// `None` for `defaults`.
    service: Option<String>,
    file: String,
    line: usize,
    settings: Vec<Setting>,
}

/// Read `path` and everything it includes.
pub fn load(path: &Path, status: Option<StatusAddr>) -> Result<Config, LoadError> {
    let mut sections = Vec::new();
    read_file(path, &mut sections, 0)?;
    build(sections, status)
}

/// Parse xinetd text held in memory; `include` and `includedir` still read files.
pub fn parse(text: &str, origin: &str, status: Option<StatusAddr>) -> Result<Config, LoadError> {
    let mut sections = Vec::new();
    parse_text(text, origin, &mut sections, 0)?;
    build(sections, status)
}

fn build(sections: Vec<Section>, status: Option<StatusAddr>) -> Result<Config, LoadError> {
    let mut loaded = Loaded::default();
    let mut defaults = Attrs::default();
    for section in sections.iter().filter(|s| s.service.is_none()) {
        apply(&mut defaults, section, &mut loaded.ignored)?;
        defaults.check_defaults().map_err(|m| at(&section.file, section.line, m))?;
    }
    // The section of each service kept, in the order of `loaded.services()`.
    let mut origins = Vec::new();
    for section in &sections {
        let Some(name) = &section.service else { continue };
        let mut attrs = defaults.clone();
        apply(&mut attrs, section, &mut loaded.ignored)?;
        let built = attrs::build(name, &attrs, &defaults, Format::Xinetd)
            .map_err(|m| at(&section.file, section.line, format!("service {name}: {m}")))?;
        match built {
            Built::Service(service) => keep(&mut loaded, &mut origins, *service, section),
            Built::Disabled(id) => loaded.disable(id),
            // xinetd logs "No such internal service" and starts the others.
            Built::NoSuchInternal(id, why) => {
                let where_ = format!("{}:{}", section.file, section.line);
                loaded.ignored.push(format!("{where_}: service {name}: {why}: disabled, as xinetd disables it"));
                loaded.disable(id);
            }
        }
    }
    loaded.finish(status).map_err(|m| LoadError { file: "xinetd config".into(), line: None, message: m })
}

/// Keep `service`, built from `section`, doing what xinetd does with an id already taken: it
/// starts every section, even two with one id (Debian's stock `chargen` and `chargen-udp` files
/// both declare `chargen-dgram`). On the same listener only one of the two ever receives a
/// datagram or connection (the second UDP socket shares the port through `SO_REUSEADDR`, a
/// second TCP bind fails), so the first is served alone; on another listener both are served,
/// the second under a name of its own, as warren's status and reloads need. Either way a
/// warning names both sections.
fn keep(loaded: &mut Loaded, origins: &mut Vec<String>, mut service: Service, section: &Section) {
    let here = format!("{}:{}", section.file, section.line);
    let taken = |loaded: &Loaded, name: &str| loaded.services().iter().position(|s| s.name == name);
    if let Some(first) = taken(loaded, &service.name) {
        let (id, there) = (service.name.clone(), &origins[first]);
        let listen = loaded.services()[first].listen;
        if listen == service.listen {
            loaded.ignored.push(format!(
                "{here}: id {id:?} is also the service at {there}, on the same {} {}: serving that one \
                 (xinetd starts both, and only one of them receives any one datagram or connection)",
                listen.transport.name(),
                listen.addr
            ));
            return;
        }
        let mut n = 2;
        while taken(loaded, &format!("{id}-{n}")).is_some() {
            n += 1;
        }
        service.name = format!("{id}-{n}");
        loaded.ignored.push(format!(
            "{here}: id {id:?} is also the service at {there}: serving both, as xinetd does, this one as {:?}",
            service.name
        ));
    }
    loaded.push(service);
    origins.push(here);
}

fn apply(attrs: &mut Attrs, section: &Section, ignored: &mut Vec<String>) -> Result<(), LoadError> {
    for s in &section.settings {
        let mut notes = Vec::new();
        attrs.apply(&s.name, s.op, s.words.clone(), &mut notes).map_err(|m| at(&section.file, s.line, m))?;
        ignored.extend(notes.into_iter().map(|n| format!("{}:{}: {n}", section.file, s.line)));
    }
    Ok(())
}

fn at(file: &str, line: usize, message: String) -> LoadError {
    LoadError { file: file.into(), line: Some(line), message }
}

/// Includes nest at most this deep, so that a file including itself is an error, not a hang.
const MAX_DEPTH: usize = 8;

fn read_file(path: &Path, sections: &mut Vec<Section>, depth: usize) -> Result<(), LoadError> {
    let origin = path.display().to_string();
    if depth > MAX_DEPTH {
        return Err(LoadError { file: origin, line: None, message: "includes nest too deep".into() });
    }
    let text = std::fs::read_to_string(path).map_err(|e| LoadError {
        file: origin.clone(),
        line: None,
        message: e.to_string(),
    })?;
    parse_text(&text, &origin, sections, depth)
}

fn parse_text(text: &str, origin: &str, sections: &mut Vec<Section>, depth: usize) -> Result<(), LoadError> {
    let mut open: Option<Section> = None;
    let mut awaiting_brace: Option<Section> = None;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = raw.trim();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        if let Some(section) = awaiting_brace.take() {
            if content != "{" {
                return Err(at(origin, line, format!("expected {{ after line {}", section.line)));
            }
            open = Some(section);
            continue;
        }
        if let Some(section) = &mut open {
            if content == "}" {
                sections.extend(open.take());
            } else {
                section.settings.push(setting(content, line).map_err(|m| at(origin, line, m))?);
            }
            continue;
        }
        let mut words = content.split_whitespace();
        let keyword = words.next().unwrap_or_default();
        let rest: Vec<&str> = words.collect();
        let (rest, brace) = match rest.split_last() {
            Some((&"{", head)) => (head.to_vec(), true),
            _ => (rest, false),
        };
        let section = |service| Section { service, file: origin.into(), line, settings: Vec::new() };
        let new = match (keyword, rest.as_slice()) {
            ("defaults", []) => section(None),
            ("service", [name]) => section(Some(name.to_string())),
            ("include", [file]) => {
                read_file(Path::new(file), sections, depth + 1)?;
                continue;
            }
            ("includedir", [dir]) => {
                for file in include_dir(Path::new(dir)).map_err(|m| at(origin, line, m))? {
                    read_file(&file, sections, depth + 1)?;
                }
                continue;
            }
            _ => {
                return Err(at(
                    origin,
                    line,
                    format!("expected defaults, service <name>, include or includedir: {content:?}"),
                ));
            }
        };
        if brace { open = Some(new) } else { awaiting_brace = Some(new) }
    }
    match open.or(awaiting_brace) {
        Some(section) => Err(at(origin, section.line, "section is never closed with }".into())),
        None => Ok(()),
    }
}

fn setting(content: &str, line: usize) -> Result<Setting, String> {
    let (name, op, value) = if let Some(i) = content.find("+=") {
        (&content[..i], Op::Add, &content[i + 2..])
    } else if let Some(i) = content.find("-=") {
        (&content[..i], Op::Remove, &content[i + 2..])
    } else if let Some(i) = content.find('=') {
        (&content[..i], Op::Set, &content[i + 1..])
    } else {
        return Err(format!("expected <attribute> = <value>: {content:?}"));
    };
    let name = name.trim();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(format!("bad attribute name {name:?}"));
    }
    Ok(Setting { name: name.into(), op, words: value.split_whitespace().map(String::from).collect(), line })
}

/// The files of an `includedir`, in C-locale order, skipping names with a dot or ending in `~`
/// (editor backups, `.dpkg-old` files), as xinetd does.
fn include_dir(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("includedir {}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| e.file_name().to_str().is_some_and(|n| !n.contains('.') && !n.ends_with('~')))
        .map(|e| e.path())
        .collect();
    files.sort();
    Ok(files)
}
