//! `warren bench report`: the latest result of every bench, its tables and its chart, in one
//! self-contained HTML page (no script, no link outside it) that opens offline.
//!
//! A bench's result is `NAME.md` (its table, as the bench printed it) and, beside it,
//! `NAME.svg` (its chart); a recorded run in `docs/` is `bench-NAME.md` and `bench-NAME.svg`.
//! Of the same bench found in several directories, the most recently written wins.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, bail};
use clap::Args;

use crate::chart::escape;

/// The benches, in the order the page shows them.
const BENCHES: [&str; 8] = ["models", "http", "superd", "registry", "dns", "rpc", "switch", "soak"];

#[derive(Args, Clone, Debug)]
pub struct ReportArgs {
    /// Directories to gather results from (`NAME.md`, `bench-NAME.md`, with a `.svg` beside).
    #[arg(long = "from", default_values = ["bench-out", "docs"])]
    pub from: Vec<PathBuf>,
    /// The page to write.
    #[arg(long, default_value = "bench-out/report.html")]
    pub out: PathBuf,
}

/// One bench's latest result.
#[derive(Debug)]
struct Found {
    bench: &'static str,
    markdown: PathBuf,
    chart: Option<PathBuf>,
    written: SystemTime,
}

/// `warren bench report`.
pub fn report(args: &ReportArgs) -> anyhow::Result<()> {
    let found = gather(&args.from)?;
    if found.is_empty() {
        let dirs: Vec<String> = args.from.iter().map(|d| d.display().to_string()).collect();
        bail!("no bench results in {}: run a `warren bench` first, or name its --out with --from", dirs.join(", "));
    }
    let html = page(&found)?;
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(&args.out, html).with_context(|| format!("cannot write {}", args.out.display()))?;
    let names: Vec<&str> = found.iter().map(|f| f.bench).collect();
    eprintln!("bench: wrote {} ({})", args.out.display(), names.join(", "));
    Ok(())
}

/// The newest result of each bench in `dirs`; a directory that does not exist is skipped.
fn gather(dirs: &[PathBuf]) -> anyhow::Result<Vec<Found>> {
    let mut found: Vec<Found> = Vec::new();
    for dir in dirs.iter().filter(|d| d.is_dir()) {
        for bench in BENCHES {
            for stem in [bench.to_owned(), format!("bench-{bench}")] {
                let markdown = dir.join(format!("{stem}.md"));
                let Ok(meta) = std::fs::metadata(&markdown) else { continue };
                let written = meta.modified().with_context(|| format!("{}", markdown.display()))?;
                let chart = Some(dir.join(format!("{stem}.svg"))).filter(|c| c.is_file());
                let this = Found { bench, markdown, chart, written };
                match found.iter_mut().find(|f| f.bench == bench) {
                    Some(older) if older.written < this.written => *older = this,
                    Some(_) => {}
                    None => found.push(this),
                }
            }
        }
    }
    found.sort_by_key(|f| BENCHES.iter().position(|b| *b == f.bench));
    Ok(found)
}

fn page(found: &[Found]) -> anyhow::Result<String> {
    let mut html = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>warren benches</title>\n<style>\n",
    );
    html.push_str(STYLE);
    html.push_str("</style>\n</head>\n<body>\n<h1>warren benches</h1>\n<nav><ul>\n");
    for f in found {
        let _ = writeln!(html, "<li><a href=\"#{0}\">{0}</a></li>", f.bench);
    }
    html.push_str("</ul></nav>\n");
    for f in found {
        let markdown = std::fs::read_to_string(&f.markdown).with_context(|| format!("{}", f.markdown.display()))?;
        let _ = writeln!(html, "<section id=\"{}\">", f.bench);
        let _ = writeln!(
            html,
            "<p class=\"source\">warren bench {}: {}, written {}</p>",
            f.bench,
            escape(&f.markdown.display().to_string()),
            humantime::format_rfc3339_seconds(f.written)
        );
        if let Some(chart) = &f.chart {
            let svg = std::fs::read_to_string(chart).with_context(|| format!("{}", chart.display()))?;
            let _ = writeln!(html, "<figure>\n{}</figure>", inline_svg(&svg, chart)?);
        }
        html.push_str(&to_html(&markdown));
        html.push_str("</section>\n");
    }
    html.push_str("</body>\n</html>\n");
    Ok(html)
}

/// The `<svg>` element of a chart file, without an XML declaration before it.
fn inline_svg<'a>(svg: &'a str, path: &Path) -> anyhow::Result<&'a str> {
    match svg.find("<svg") {
        Some(start) if svg.trim_end().ends_with("</svg>") => Ok(&svg[start..]),
        _ => bail!("{} is not an SVG picture", path.display()),
    }
}

/// Markdown as HTML, with tables. What looks like an HTML tag in a result (an error message's
/// `<path>`) is shown as text, not passed through as Markdown would, so no table opens a tag.
fn to_html(markdown: &str) -> String {
    use pulldown_cmark::{Event, Options, Parser, html};
    let events = Parser::new_ext(markdown, Options::ENABLE_TABLES).map(|event| match event {
        Event::Html(raw) | Event::InlineHtml(raw) => Event::Text(raw),
        other => other,
    });
    let mut out = String::new();
    html::push_html(&mut out, events);
    out
}

const STYLE: &str = "body { font-family: sans-serif; margin: 2em auto; max-width: 110em; padding: 0 1em; }
nav ul { list-style: none; padding: 0; } nav li { display: inline; margin-right: 1em; }
section { border-top: 1px solid #ccc; margin-top: 2em; }
.source { color: #666; font-size: 90%; }
figure { margin: 1em 0; overflow-x: auto; }
table { border-collapse: collapse; margin: 1em 0; font-size: 90%; display: block; overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: left; }
th { background: #f2f2f2; }
code { background: #f6f6f6; }
";

#[cfg(test)]
mod tests {
    use scraper::{Html, Selector};

    use super::*;
    use crate::chart::BarChart;
    use crate::scratch::Scratch;

    fn chart(title: &str) -> String {
        BarChart {
            title: title.into(),
            unit: "req/s".into(),
            series: vec!["keep-alive".into()],
            groups: vec![("event".into(), vec![Some(81_724.0)]), ("fork <hub>".into(), vec![Some(48_087.0)])],
            ..BarChart::default()
        }
        .svg()
    }

    #[test]
    fn every_bench_has_its_table_and_chart_on_a_well_formed_page() {
        let out = Scratch::new("page-out", 0o700).unwrap();
        let docs = Scratch::new("page-docs", 0o700).unwrap();
        let table = |name: &str| {
            format!("# warren bench {name}\n\n| model | req/s |\n|---|---|\n| **{name}** | 1,234 & <more> |\n")
        };
        std::fs::write(docs.dir.join("bench-models.md"), "# old\n\n| model | req/s |\n|---|---|\n| stale | 1 |\n")
            .unwrap();
        std::fs::write(docs.dir.join("bench-superd.md"), table("superd")).unwrap();
        // The recorded run is an hour older than the new one: the newer models result is shown.
        let recorded = std::fs::File::options().write(true).open(docs.dir.join("bench-models.md")).unwrap();
        recorded.set_modified(SystemTime::now() - std::time::Duration::from_secs(3600)).unwrap();
        std::fs::write(out.dir.join("models.md"), table("models")).unwrap();
        std::fs::write(out.dir.join("models.svg"), chart("models chart")).unwrap();
        std::fs::write(out.dir.join("http.md"), table("http")).unwrap();
        std::fs::write(out.dir.join("http.svg"), chart("http chart")).unwrap();
        std::fs::write(out.dir.join("unrelated.md"), "| not | a bench |\n").unwrap();
        let path = out.dir.join("page/report.html");
        report(&ReportArgs {
            from: vec![out.dir.clone(), docs.dir.clone(), out.dir.join("absent")],
            out: path.clone(),
        })
        .unwrap();

        let html = Html::parse_document(&std::fs::read_to_string(&path).unwrap());
        assert!(html.errors.is_empty(), "the page parses without errors: {:?}", html.errors);
        let select = |css: &str| Selector::parse(css).unwrap();
        let sections: Vec<&str> = html.select(&select("section")).filter_map(|s| s.value().attr("id")).collect();
        assert_eq!(sections, ["models", "http", "superd"], "in the benches' order, each once");
        for (bench, has_chart) in [("models", true), ("http", true), ("superd", false)] {
            let section = html.select(&select(&format!("section#{bench}"))).next().unwrap();
            let cells: Vec<String> = section.select(&select("table td")).map(|td| td.text().collect()).collect();
            assert_eq!(cells, [bench.to_owned(), "1,234 & <more>".to_owned()], "{bench}'s table");
            let charts: Vec<String> = section.select(&select("svg text")).map(|t| t.text().collect()).collect();
            assert_eq!(has_chart, charts.contains(&format!("{bench} chart")), "{bench}: {charts:?}");
            if has_chart {
                assert!(charts.contains(&"<hub>".to_owned()), "labels are escaped in the SVG: {charts:?}");
            }
        }
        assert!(!html.html().contains("stale"), "the older models result is left out");
        assert_eq!(html.select(&select("script, link, img")).count(), 0, "nothing loads from elsewhere");
    }

    #[test]
    fn no_results_is_a_clear_error() {
        let empty = Scratch::new("page-empty", 0o700).unwrap();
        let args = ReportArgs { from: vec![empty.dir.clone()], out: empty.dir.join("r.html") };
        let error = report(&args).unwrap_err().to_string();
        assert!(error.contains("no bench results in") && error.contains("--from"), "{error}");
        assert!(!args.out.exists());
    }
}
