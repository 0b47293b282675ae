//! A `/metrics` page read by a parser the tests did not write: Python's `prometheus_client`
//! (Debian's `python3-prometheus-client`), whose OpenMetrics parser checks the whole page
//! (types, units, `_total` and `_bucket` names, the closing `# EOF`) and refuses it otherwise.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

/// The parser's view, printed one line per family (`F name type`) and per sample
/// (`S name value label=value…`), tab-separated; label values are JSON-quoted by the script.
const SCRIPT: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    print("F\t%s\t%s" % (family.name, family.type))
    for s in family.samples:
        labels = "\t".join("%s=%s" % (k, json.dumps(v)) for k, v in sorted(s.labels.items()))
        print("S\t%s\t%r\t%s" % (s.name, float(s.value), labels))
"#;

/// One sample: its full name (`…_total`, `…_bucket`), labels and value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed page: each family's type by name, and every sample.
#[derive(Clone, Debug, Default)]
pub struct Page {
    pub types: BTreeMap<String, String>,
    pub samples: Vec<Sample>,
}

impl Page {
    /// Parses `text`; panics (the test fails) with the parser's words if it refuses it.
    pub fn parse(text: &str) -> Page {
        let mut child = Command::new("/usr/bin/python3")
            .args(["-c", SCRIPT])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("/usr/bin/python3 (with python3-prometheus-client)");
        child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write the page");
        let out = child.wait_with_output().expect("python3");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "the OpenMetrics parser refused the page: {stderr}\n{text}");
        let mut page = Page::default();
        for line in String::from_utf8(out.stdout).expect("UTF-8").lines() {
            let mut fields = line.split('\t');
            match fields.next() {
                Some("F") => {
                    let (name, kind) = (fields.next().expect("name"), fields.next().expect("type"));
                    page.types.insert(name.to_owned(), kind.to_owned());
                }
                Some("S") => {
                    let name = fields.next().expect("name").to_owned();
                    let value = fields.next().expect("value").parse().expect("a float");
                    let labels = fields
                        .filter(|label| !label.is_empty())
                        .map(|label| {
                            let (key, quoted) = label.split_once('=').expect("key=value");
                            (key.to_owned(), unquote(quoted))
                        })
                        .collect();
                    page.samples.push(Sample { name, labels, value });
                }
                _ => panic!("unexpected parser output: {line:?}"),
            }
        }
        page
    }

    /// The type of the family `name` (`counter`, `gauge`, `histogram`…), if the page has it.
    pub fn kind(&self, family: &str) -> Option<&str> {
        self.types.get(family).map(String::as_str)
    }

    /// The value of the sample `name` whose labels include every one of `labels`, summed over
    /// the samples that match (so `&[]` totals a family's series).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    /// Whether the page has a sample `name` with every one of `labels`.
    pub fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.matching(name, labels).next().is_some()
    }

    fn matching<'a>(&'a self, name: &'a str, labels: &'a [(&str, &str)]) -> impl Iterator<Item = &'a Sample> {
        self.samples.iter().filter(move |s| {
            s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }
}

/// A JSON string as the script printed it; label values here are plain ASCII words.
fn unquote(quoted: &str) -> String {
    let inner = quoted.strip_prefix('"').and_then(|q| q.strip_suffix('"')).expect("a JSON string");
    inner.replace("\\\"", "\"").replace("\\\\", "\\")
}
