//! `warren bench chart`: draws a chart again from a recorded table (`docs/bench-http.md`,
//! `docs/bench-models.md`), so that a recorded run's picture follows the chart code without
//! running the bench again. It reads the tables `warren bench http` and `warren bench models`
//! print.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;

use crate::chart::BarChart;

#[derive(Args, Clone, Debug)]
pub struct ChartArgs {
    /// A table printed by `warren bench http` or `warren bench models` (Markdown).
    pub table: PathBuf,
    /// The SVG to write.
    #[arg(long, short)]
    pub out: PathBuf,
}

/// `warren bench chart`.
pub fn chart(args: &ChartArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.table).with_context(|| format!("cannot read {}", args.table.display()))?;
    let chart = from_markdown(&text).with_context(|| format!("{}", args.table.display()))?;
    std::fs::write(&args.out, chart.svg()).with_context(|| format!("cannot write {}", args.out.display()))?;
    eprintln!("bench: wrote {}", args.out.display());
    Ok(())
}

fn from_markdown(text: &str) -> anyhow::Result<BarChart> {
    if let Some(rows) = table(text, "| Server |") {
        return http(&rows);
    }
    if let Some(rows) = table(text, "| model |") {
        return models(&rows);
    }
    bail!("no table of `warren bench http` (\"| Server |\") or `warren bench models` (\"| model |\")")
}

/// The first table whose header line starts with `header`: its rows of cells, header first,
/// the separator line left out.
fn table(text: &str, header: &str) -> Option<Vec<Vec<String>>> {
    let mut lines = text.lines().skip_while(|l| !l.starts_with(header));
    let head = lines.next()?;
    let cells = |line: &str| line.trim().trim_matches('|').split('|').map(|c| c.trim().to_owned()).collect::<Vec<_>>();
    let mut rows = vec![cells(head)];
    rows.extend(lines.skip(1).take_while(|l| l.starts_with('|')).map(cells));
    Some(rows)
}

/// `14.6k (1.10×) [..]` → 14600; `7,446 (…)` → 7446; a dash → `None`.
fn leading(cell: &str) -> Option<f64> {
    let token = cell.split_whitespace().next()?.replace(',', "");
    let (digits, scale) = match token.strip_suffix('k') {
        Some(d) => (d, 1000.0),
        None => (token.as_str(), 1.0),
    };
    digits.parse::<f64>().ok().map(|v| v * scale)
}

/// `14.6k (1.10×) [..]` → 1.10.
fn ratio(cell: &str) -> Option<f64> {
    let start = cell.find('(')? + 1;
    let end = start + cell[start..].find('×')?;
    cell[start..end].parse().ok()
}

fn http(rows: &[Vec<String>]) -> anyhow::Result<BarChart> {
    let [head, nginx, models @ ..] = rows else { bail!("the http table has no nginx row") };
    let scenarios: Vec<&String> = head.iter().skip(1).filter(|h| *h != "peak RSS").collect();
    let groups = scenarios
        .iter()
        .enumerate()
        .map(|(i, label)| {
            let base = nginx.get(i + 1).and_then(|c| leading(c)).map_or("—".into(), crate::chart::short);
            let ratios = models.iter().map(|m| m.get(i + 1).and_then(|c| ratio(c))).collect();
            (format!("{label} nginx {base}/s"), ratios)
        })
        .collect();
    Ok(crate::httpreport::chart_of(models.iter().map(|m| m[0].clone()).collect(), groups))
}

fn models(rows: &[Vec<String>]) -> anyhow::Result<BarChart> {
    let [head, rows @ ..] = rows else { bail!("the models table is empty") };
    let column = |name: &str| head.iter().position(|h| h == name).with_context(|| format!("no column {name:?}"));
    let (keep_alive, new_conn) = (column("keep-alive req/s")?, column("new-conn req/s")?);
    let groups = rows
        .iter()
        .map(|r| {
            let value = |i: usize| r.get(i).and_then(|c| leading(c));
            (r[0].trim_matches('*').to_owned(), vec![value(keep_alive), value(new_conn)])
        })
        .filter(|(_, v)| v.iter().any(Option::is_some))
        .collect();
    Ok(crate::report::chart_of(groups))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http_table_becomes_ratios_with_nginx_under_each_label() {
        let md = "# warren bench http\n\n## Requests per second\n\n\
            | Server | 1 KiB keep-alive c1 | 1 MiB close c50 | peak RSS |\n|---|---|---|---|\n\
            | nginx | 14.6k (1.00×) [12.8k–15.3k] | 1.7k (1.00×) | 19.3 MiB |\n\
            | warren event | 16.0k (1.10×) [15.8k–16.2k] | — | 9.4 MiB |\n\n\
            | Server | later table |\n";
        let chart = from_markdown(md).unwrap();
        assert_eq!(chart.series, ["warren event"]);
        assert_eq!(
            chart.groups,
            [
                ("1 KiB keep-alive c1 nginx 15k/s".to_owned(), vec![Some(1.10)]),
                ("1 MiB close c50 nginx 1.7k/s".to_owned(), vec![None])
            ]
        );
    }

    #[test]
    fn a_models_table_becomes_two_rates_per_measured_model() {
        let md = "| model | keep-alive req/s | p50 / p99 µs | new-conn req/s |\n| --- | --- | --- | --- |\n\
            | **event** | 81,724 (77,981–101,130) | 571 / 2,008 | 13,007 (12,793–13,725) |\n\
            | **event --threads 2** | — | — | — |\n";
        let chart = from_markdown(md).unwrap();
        assert_eq!(chart.groups, [("event".to_owned(), vec![Some(81_724.0), Some(13_007.0)])]);
        assert!(from_markdown("| other | table |\n|---|---|\n").unwrap_err().to_string().contains("no table"));
    }
}
