//! Every bench's SVG chart: grouped bars (one group per load or server, one bar per series),
//! laid out so that no two texts overlap. Written by hand: a grouped bar chart is a few dozen
//! elements, not worth a plotting crate, and the layout is what needs care.
//!
//! Texts are measured by estimate (a character is at most 0.6 of the font size wide in a
//! sans-serif face, digits about 0.55), so every box is at least as wide as what a viewer
//! draws. Group labels wrap at spaces to their group's width; a word wider than that turns
//! the whole label upright. Value labels that are wider than their bar stand upright above it.

mod layout;

use self::layout::{Anchor, Layout, Text};

const COLORS: [&str; 8] = ["#3b6ea5", "#e08a2c", "#4a9a4a", "#b5403a", "#7b5ea7", "#8c6d31", "#d36fb4", "#6b6b6b"];
const FONT: f64 = 12.0;
const SMALL: f64 = 10.0;
const TITLE: f64 = 15.0;
const PLOT_HEIGHT: f64 = 260.0;

/// A grouped bar chart, before layout.
#[derive(Clone, Debug, Default)]
pub struct BarChart {
    pub title: String,
    /// What the y axis counts ("req/s").
    pub unit: String,
    /// One entry per bar in a group, in the legend.
    pub series: Vec<String>,
    /// One group per x-axis label: its label and one value per series (`None`: not measured).
    pub groups: Vec<(String, Vec<Option<f64>>)>,
    /// A horizontal line drawn across the plot and named in the legend, such as nginx at 1.0×.
    pub reference: Option<(f64, String)>,
    /// How a value is printed over its bar and on the axis.
    pub format: Format,
    /// A line of small print under the chart.
    pub note: String,
}

/// How figures print: a count with k/M suffixes, or a ratio such as `1.42×`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Format {
    #[default]
    Count,
    Ratio,
}

impl Format {
    pub fn show(self, value: f64) -> String {
        match self {
            Self::Count => short(value),
            Self::Ratio => format!("{value:.2}×"),
        }
    }

    fn axis(self, value: f64) -> String {
        match self {
            Self::Count => short(value),
            Self::Ratio => format!("{value:.1}×"),
        }
    }
}

impl BarChart {
    pub fn svg(&self) -> String {
        self.layout().svg()
    }

    /// Where every element goes; `svg` writes it out, the tests check its text boxes.
    fn layout(&self) -> Layout {
        let series = self.series.len().max(1);
        let bar = if series <= 2 { 26.0 } else { 16.0 };
        let group = (bar * series as f64 + 24.0).max(60.0);
        let max = self.groups.iter().flat_map(|(_, v)| v.iter().flatten()).fold(0.0f64, |a, &b| a.max(b));
        let max = max.max(self.reference.as_ref().map_or(0.0, |r| r.0));
        let top = nice_ceiling(max);
        let ticks: Vec<String> = (0..=5).map(|i| self.format.axis(top * f64::from(i) / 5.0)).collect();
        let left = 34.0 + ticks.iter().map(|t| layout::width(t, FONT)).fold(0.0, f64::max);
        let plot_width = group * self.groups.len().max(1) as f64;
        // Wide enough for the plot, the (bold) title and the widest legend entry.
        let title_width = layout::width(&self.title, TITLE) * 1.1;
        let widest_entry =
            self.series.iter().chain(self.reference.as_ref().map(|r| &r.1)).map(|s| 36.0 + layout::width(s, FONT));
        let width = (left + plot_width + 20.0)
            .max(left + title_width + 10.0)
            .max(left + widest_entry.fold(0.0, f64::max) + 10.0);
        let mut l = Layout::new(width);
        l.text(Text::new(left, 20.0, TITLE, &self.title).bold());
        // The legend: series left to right, then the reference line, wrapping at the right edge.
        let mut entries: Vec<(String, Option<&str>)> =
            self.series.iter().enumerate().map(|(i, s)| (s.clone(), Some(COLORS[i % COLORS.len()]))).collect();
        if let Some((_, name)) = &self.reference {
            entries.push((name.clone(), None));
        }
        let (mut x, mut y) = (left, 34.0);
        for (name, color) in &entries {
            let w = 18.0 + layout::width(name, FONT) + 18.0;
            if x + w > width - 10.0 && x > left {
                (x, y) = (left, y + 18.0);
            }
            match color {
                Some(color) => l.rect(x, y, 12.0, 12.0, color, None),
                None => l.line(x, y + 6.0, x + 12.0, y + 6.0, "#000", 2.0),
            }
            l.text(Text::new(x + 16.0, y + 10.0, FONT, name));
            x += w;
        }
        // Upright value labels reach above the tallest bar, so the plot starts below them.
        let value_label = |v: f64| self.format.show(v);
        let upright =
            self.groups.iter().any(|(_, v)| v.iter().flatten().any(|&v| layout::width(&value_label(v), SMALL) > bar));
        let head = if upright {
            4.0 + self
                .groups
                .iter()
                .flat_map(|(_, v)| v.iter().flatten())
                .map(|&v| layout::width(&value_label(v), SMALL))
                .fold(0.0, f64::max)
        } else {
            SMALL + 4.0
        };
        let plot_top = y + 22.0 + head;
        let base = plot_top + PLOT_HEIGHT;
        let at = |v: f64| base - PLOT_HEIGHT * v / top;
        for (i, tick) in ticks.iter().enumerate() {
            let y = at(top * i as f64 / 5.0);
            l.line(left, y, left + plot_width, y, "#ddd", 1.0);
            l.text(Text::new(left - 6.0, y + 4.0, FONT, tick).anchor(Anchor::End));
        }
        let unit_y = plot_top + PLOT_HEIGHT / 2.0;
        l.text(Text::new(14.0, unit_y, FONT, &self.unit).anchor(Anchor::Middle).upright());
        let mut lowest = base;
        for (g, (label, values)) in self.groups.iter().enumerate() {
            let x0 = left + group * g as f64 + (group - bar * series as f64) / 2.0;
            for (j, value) in values.iter().enumerate() {
                let Some(value) = value else { continue };
                let x = x0 + bar * j as f64;
                let y = at(*value);
                let tip = format!("{}: {}", self.series.get(j).map_or("", String::as_str), value_label(*value));
                l.bar(x, y, bar - 2.0, base - y, COLORS[j % COLORS.len()], tip);
                let text =
                    Text::new(x + (bar - 2.0) / 2.0, y - 3.0, SMALL, &value_label(*value)).anchor(Anchor::Middle);
                l.text(if upright {
                    text.anchor(Anchor::Start).upright_at(x + (bar - 2.0) / 2.0 + SMALL / 3.0, y - 3.0)
                } else {
                    text
                });
            }
            let cx = left + group * g as f64 + group / 2.0;
            lowest = lowest.max(group_label(&mut l, label, cx, base, group - 8.0));
        }
        l.line(left, base, left + plot_width, base, "#000", 1.0);
        if let Some((value, _)) = &self.reference {
            l.line(left, at(*value), left + plot_width, at(*value), "#000", 2.0);
        }
        if !self.note.is_empty() {
            for (k, line) in layout::wrap(&self.note, SMALL, width - left - 10.0).iter().enumerate() {
                l.text(Text::new(left, lowest + 20.0 + 13.0 * k as f64, SMALL, line).fill("#555"));
            }
        }
        l
    }
}

/// Writes a group's label under the axis, wrapped to `room`, or upright if a word is wider;
/// returns the label's lowest y.
fn group_label(l: &mut Layout, label: &str, cx: f64, base: f64, room: f64) -> f64 {
    let lines = layout::wrap(label, FONT, room);
    if lines.iter().all(|line| layout::width(line, FONT) <= room) {
        for (k, line) in lines.iter().enumerate() {
            l.text(Text::new(cx, base + 16.0 + 14.0 * k as f64, FONT, line).anchor(Anchor::Middle));
        }
        base + 16.0 + 14.0 * (lines.len().max(1) - 1) as f64 + 4.0
    } else {
        l.text(Text::new(cx, base + 8.0, FONT, label).anchor(Anchor::End).upright_at(cx + FONT / 3.0, base + 8.0));
        base + 8.0 + layout::width(label, FONT)
    }
}

/// The smallest 1, 2 or 5 × 10^k at or above `value`, so gridlines fall on round numbers.
fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|&v| v >= value * 0.999_999)
        .unwrap_or(10.0 * magnitude)
}

/// `48213` → `48k`, `1550` → `1.6k`, `2.5e6` → `2.5M`: labels that must fit a bar.
pub fn short(value: f64) -> String {
    if value >= 10_000_000.0 {
        format!("{:.0}M", value / 1e6)
    } else if value >= 1_000_000.0 {
        format!("{:.1}M", value / 1e6)
    } else if value >= 10_000.0 {
        format!("{:.0}k", value / 1000.0)
    } else if value >= 1000.0 {
        format!("{:.1}k", value / 1000.0)
    } else if value >= 10.0 || value == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlaps(a: [f64; 4], b: [f64; 4]) -> bool {
        a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3]
    }

    /// Asserts that no two texts of `chart` overlap and that all lie inside the picture.
    fn assert_legible(chart: &BarChart) {
        let layout = chart.layout();
        let boxes = layout.text_boxes();
        for (i, (a, at)) in boxes.iter().enumerate() {
            assert!(a[0] >= 0.0 && a[1] >= 0.0, "{at:?} starts outside the picture: {a:?}");
            assert!(a[2] <= layout.width() && a[3] <= layout.height(), "{at:?} ends outside the picture: {a:?}");
            for (b, bt) in &boxes[i + 1..] {
                assert!(!overlaps(*a, *b), "{at:?} {a:?} overlaps {bt:?} {b:?}");
            }
        }
    }

    #[test]
    fn round_gridlines() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(48_213.0), 50_000.0);
        assert_eq!(nice_ceiling(120.0), 200.0);
        assert_eq!(nice_ceiling(1000.0), 1000.0);
        assert_eq!(short(48_213.0), "48k");
        assert_eq!(short(1_550.0), "1.6k");
        assert_eq!(short(12.0), "12");
        assert_eq!(short(2_500_000.0), "2.5M");
    }

    /// The worst case the benches produce: `warren bench http`'s sixteen scenarios with
    /// four models each, long labels and ratios, beside a chart of wide counts.
    #[test]
    fn no_two_texts_overlap_in_the_widest_charts() {
        let http = BarChart {
            title: "warren HTTP: requests per second as a ratio to nginx".into(),
            unit: "ratio".into(),
            series: ["warren event", "warren hybrid", "warren thread", "warren pool"].map(String::from).into(),
            groups: (0..16)
                .map(|i| {
                    let label = format!("1 MiB keep-alive c{} nginx {}k/s", [1, 50, 256, 1000][i % 4], 100 + i);
                    (label, vec![Some(1.63), Some(0.66), None, Some(1.0 + i as f64 / 10.0)])
                })
                .collect(),
            reference: Some((1.0, "nginx = 1.0×".into())),
            format: Format::Ratio,
            note: "ratios of medians over three runs each; the same machine in one run, ".repeat(4),
        };
        assert_legible(&http);
        let counts = BarChart {
            title: "a chart whose labels are single long words".into(),
            unit: "req/s".into(),
            series: (0..8).map(|i| format!("series number {i}")).collect(),
            groups: (0..5).map(|i| (format!("unbreakable-label-{i}"), vec![Some(123_456_789.0); 8])).collect(),
            ..BarChart::default()
        };
        assert_legible(&counts);
        let narrow = BarChart {
            title: "One group under a title far wider than its plot".into(),
            series: vec!["a series whose name is wider than the plot too".into()],
            groups: vec![("one".into(), vec![Some(2.0)])],
            ..BarChart::default()
        };
        assert_legible(&narrow);
        let svg = counts.svg();
        assert!(svg.contains(r#"transform="rotate(-90"#), "a label wider than its group stands upright");
    }

    #[test]
    fn bars_scale_to_a_round_top_and_skip_missing_values() {
        let chart = BarChart {
            title: "t".into(),
            unit: "req/s".into(),
            series: vec!["keep-alive".into(), "new connection".into()],
            groups: vec![
                ("event".into(), vec![Some(40_000.0), Some(10_000.0)]),
                ("fork".into(), vec![Some(9_000.0), None]),
            ],
            ..BarChart::default()
        };
        let svg = chart.svg();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<title>").count(), 3, "one bar per measured value: {svg}");
        assert!(svg.contains(">40k<") && svg.contains(">fork<") && svg.contains(">50k<"), "{svg}");
        assert_legible(&chart);
    }
}
