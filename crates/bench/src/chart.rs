//! `models.svg`: keep-alive and new-connection requests per second, one pair of bars per model.
//! Written by hand: a grouped bar chart is a few dozen elements, not worth a plotting crate.

use std::fmt::Write;

use crate::report::{Row, median, thousands};

const BAR: f64 = 26.0;
const GROUP: f64 = 90.0;
const LEFT: f64 = 70.0;
const TOP: f64 = 50.0;
const PLOT_HEIGHT: f64 = 260.0;
const BOTTOM: f64 = 60.0;
const COLORS: [(&str, &str); 2] = [("keep-alive", "#3b6ea5"), ("new connection per request", "#e08a2c")];

/// The chart for every row that has throughput numbers (variants measured only for the
/// blocking call are left out).
pub fn svg(rows: &[Row]) -> String {
    let bars: Vec<(&str, [f64; 2])> = rows
        .iter()
        .filter(|r| !r.keep_alive.is_empty() || !r.new_conn.is_empty())
        .map(|r| (r.name.as_str(), [rate(&r.keep_alive), rate(&r.new_conn)]))
        .collect();
    let top = nice_ceiling(bars.iter().flat_map(|(_, v)| *v).fold(0.0, f64::max));
    let width = LEFT + GROUP * bars.len().max(1) as f64 + 20.0;
    let height = TOP + PLOT_HEIGHT + BOTTOM;
    let base = TOP + PLOT_HEIGHT;
    let mut s = String::new();
    let _ = write!(s, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" "#);
    let _ = writeln!(s, r#"viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#);
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let title = "warren server models: echo requests per second";
    let _ = writeln!(s, r#"<text x="{LEFT}" y="20" font-size="15" font-weight="bold">{title}</text>"#);
    for (i, (label, color)) in COLORS.iter().enumerate() {
        let x = LEFT + i as f64 * 150.0;
        let _ = writeln!(s, r#"<rect x="{x}" y="30" width="12" height="12" fill="{color}"/>"#);
        let _ = writeln!(s, r#"<text x="{}" y="40">{label}</text>"#, x + 16.0);
    }
    // Five steps: a top of 1, 2 or 5 × 10^k then puts every gridline on a round number.
    for step in 0..=5 {
        let value = top * f64::from(step) / 5.0;
        let y = base - PLOT_HEIGHT * f64::from(step) / 5.0;
        let _ = writeln!(s, r##"<line x1="{LEFT}" y1="{y}" x2="{}" y2="{y}" stroke="#ddd"/>"##, width - 10.0);
        let _ = writeln!(s, r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#, LEFT - 6.0, y + 4.0, short(value));
    }
    for (i, (name, values)) in bars.iter().enumerate() {
        let x0 = LEFT + GROUP * i as f64 + (GROUP - 2.0 * BAR) / 2.0;
        for (j, value) in values.iter().enumerate() {
            let h = if top > 0.0 { PLOT_HEIGHT * value / top } else { 0.0 };
            let x = x0 + BAR * j as f64;
            let _ =
                writeln!(s, r#"<rect x="{x}" y="{}" width="{BAR}" height="{h}" fill="{}"/>"#, base - h, COLORS[j].1);
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" text-anchor="middle" font-size="9">{}</text>"#,
                x + BAR / 2.0,
                base - h - 3.0,
                short(*value)
            );
        }
        let _ =
            writeln!(s, r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#, x0 + BAR, base + 18.0, escape(name));
    }
    let _ = writeln!(
        s,
        r#"<text x="14" y="{}" transform="rotate(-90 14 {})" text-anchor="middle">req/s</text>"#,
        TOP + PLOT_HEIGHT / 2.0,
        TOP + PLOT_HEIGHT / 2.0
    );
    let _ = writeln!(s, r#"<line x1="{LEFT}" y1="{base}" x2="{}" y2="{base}" stroke="black"/>"#, width - 10.0);
    let _ = writeln!(
        s,
        r##"<text x="{LEFT}" y="{}" font-size="10" fill="#555">median over runs; same machine, same run</text>"##,
        height - 12.0
    );
    s.push_str("</svg>\n");
    s
}

fn rate(loads: &[crate::load::Load]) -> f64 {
    median(&loads.iter().map(|l| l.rate).collect::<Vec<_>>())
}

/// The smallest 1, 2 or 5 × 10^k at or above `value`, so gridlines fall on round numbers.
fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * magnitude).find(|&v| v >= value).unwrap_or(10.0 * magnitude)
}

/// `48213` → `48.2k`, for labels that must fit a bar.
fn short(value: f64) -> String {
    if value >= 10_000.0 {
        format!("{:.0}k", value / 1000.0)
    } else if value >= 1000.0 {
        format!("{:.1}k", value / 1000.0)
    } else {
        thousands(value)
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::Load;

    #[test]
    fn round_gridlines() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(48_213.0), 50_000.0);
        assert_eq!(nice_ceiling(120.0), 200.0);
        assert_eq!(nice_ceiling(1000.0), 1000.0);
        assert_eq!(short(48_213.0), "48k");
        assert_eq!(short(1_550.0), "1.6k");
        assert_eq!(short(12.0), "12");
    }

    #[test]
    fn two_bars_per_measured_model() {
        let load = |rate| Load { rate, ..Load::default() };
        let rows = vec![
            Row {
                name: "event".into(),
                keep_alive: vec![load(40_000.0)],
                new_conn: vec![load(10_000.0)],
                ..Row::default()
            },
            Row {
                name: "fork".into(),
                keep_alive: vec![load(9_000.0)],
                new_conn: vec![load(1_500.0)],
                ..Row::default()
            },
            Row { name: "green <helpers>".into(), ..Row::default() },
        ];
        let svg = svg(&rows);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches(r#"width="26""#).count(), 4, "{svg}");
        assert!(svg.contains(">40k<") && svg.contains(">fork<") && !svg.contains("helpers"));
        assert!(svg.contains(">50k<"), "the axis tops out at a round number");
    }
}
