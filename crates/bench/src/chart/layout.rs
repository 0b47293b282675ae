//! A chart's elements with their positions, the boxes its texts take, and its SVG.

use std::fmt::Write;

use super::escape;

/// How wide `text` is at `size`, estimated on the wide side: 0.6 of the size per character.
pub fn width(text: &str, size: f64) -> f64 {
    text.chars().count() as f64 * size * 0.6
}

/// `text` broken at spaces into lines no wider than `room` where the words allow.
pub fn wrap(text: &str, size: f64, room: f64) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        match lines.last_mut() {
            Some(line) if width(&format!("{line} {word}"), size) <= room => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_owned()),
        }
    }
    lines
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Anchor {
    Start,
    Middle,
    End,
}

/// One text: `x`, `y` are its anchor point on the baseline.
#[derive(Clone, Debug)]
pub struct Text {
    x: f64,
    y: f64,
    size: f64,
    content: String,
    anchor: Anchor,
    bold: bool,
    fill: &'static str,
    /// Turned a quarter counter-clockwise about its anchor point, to read upwards.
    upright: bool,
}

impl Text {
    pub fn new(x: f64, y: f64, size: f64, content: &str) -> Self {
        Self {
            x,
            y,
            size,
            content: content.to_owned(),
            anchor: Anchor::Start,
            bold: false,
            fill: "#000",
            upright: false,
        }
    }

    pub fn anchor(self, anchor: Anchor) -> Self {
        Self { anchor, ..self }
    }

    pub fn bold(self) -> Self {
        Self { bold: true, ..self }
    }

    pub fn fill(self, fill: &'static str) -> Self {
        Self { fill, ..self }
    }

    pub fn upright(self) -> Self {
        Self { upright: true, ..self }
    }

    /// Upright, anchored at (`x`, `y`).
    pub fn upright_at(self, x: f64, y: f64) -> Self {
        Self { x, y, upright: true, ..self }
    }

    /// The box the text covers: (left, top, right, bottom). Glyphs rise 0.8 of the size above
    /// the baseline and fall 0.25 below it.
    pub fn bounds(&self) -> [f64; 4] {
        let w = width(&self.content, self.size) * if self.bold { 1.1 } else { 1.0 };
        let (before, after) = match self.anchor {
            Anchor::Start => (0.0, w),
            Anchor::Middle => (w / 2.0, w / 2.0),
            Anchor::End => (w, 0.0),
        };
        let (rise, fall) = (0.8 * self.size, 0.25 * self.size);
        if self.upright {
            // Reading upwards: the text runs towards smaller y, its ascent points left.
            [self.x - rise, self.y - after, self.x + fall, self.y + before]
        } else {
            [self.x - before, self.y - rise, self.x + after, self.y + fall]
        }
    }
}

#[derive(Debug)]
enum Element {
    Text(Text),
    Rect { x: f64, y: f64, w: f64, h: f64, fill: &'static str, tip: Option<String> },
    Line { x1: f64, y1: f64, x2: f64, y2: f64, stroke: &'static str, width: f64 },
}

/// Elements in drawing order, in a picture `width` wide and as tall as they reach.
#[derive(Debug)]
pub struct Layout {
    width: f64,
    elements: Vec<Element>,
}

impl Layout {
    pub fn new(width: f64) -> Self {
        Self { width, elements: Vec::new() }
    }

    pub fn text(&mut self, text: Text) {
        self.elements.push(Element::Text(text));
    }

    pub fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, fill: &'static str, tip: Option<String>) {
        self.elements.push(Element::Rect { x, y, w, h, fill, tip });
    }

    /// A bar with its figure as a tooltip.
    pub fn bar(&mut self, x: f64, y: f64, w: f64, h: f64, fill: &'static str, tip: String) {
        self.rect(x, y, w, h, fill, Some(tip));
    }

    pub fn line(&mut self, x1: f64, y1: f64, x2: f64, y2: f64, stroke: &'static str, width: f64) {
        self.elements.push(Element::Line { x1, y1, x2, y2, stroke, width });
    }

    /// Every text's box, with the text.
    #[cfg(test)]
    pub fn text_boxes(&self) -> Vec<([f64; 4], &str)> {
        self.elements
            .iter()
            .filter_map(|e| match e {
                Element::Text(t) => Some((t.bounds(), t.content.as_str())),
                _ => None,
            })
            .collect()
    }

    #[cfg(test)]
    pub fn width(&self) -> f64 {
        self.width
    }

    pub fn height(&self) -> f64 {
        let lowest = self.elements.iter().map(|e| match e {
            Element::Text(t) => t.bounds()[3],
            Element::Rect { y, h, .. } => y + h,
            Element::Line { y1, y2, .. } => y1.max(*y2),
        });
        lowest.fold(0.0, f64::max).ceil() + 10.0
    }

    pub fn svg(&self) -> String {
        let (width, height) = (self.width.ceil(), self.height());
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif">"#
        );
        let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
        for e in &self.elements {
            match e {
                Element::Rect { x, y, w, h, fill, tip } => {
                    let _ = write!(s, r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="{fill}""#);
                    match tip {
                        Some(tip) => {
                            let _ = writeln!(s, "><title>{}</title></rect>", escape(tip));
                        }
                        None => s.push_str("/>\n"),
                    }
                }
                Element::Line { x1, y1, x2, y2, stroke, width } => {
                    let _ = writeln!(
                        s,
                        r#"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" stroke="{stroke}" stroke-width="{width}"/>"#
                    );
                }
                Element::Text(t) => {
                    let anchor = match t.anchor {
                        Anchor::Start => "",
                        Anchor::Middle => r#" text-anchor="middle""#,
                        Anchor::End => r#" text-anchor="end""#,
                    };
                    let bold = if t.bold { r#" font-weight="bold""# } else { "" };
                    let fill = if t.fill == "#000" { String::new() } else { format!(r#" fill="{}""#, t.fill) };
                    let turn = if t.upright {
                        format!(r#" transform="rotate(-90 {:.1} {:.1})""#, t.x, t.y)
                    } else {
                        String::new()
                    };
                    let _ = writeln!(
                        s,
                        r#"<text x="{:.1}" y="{:.1}" font-size="{}"{anchor}{bold}{fill}{turn}>{}</text>"#,
                        t.x,
                        t.y,
                        t.size,
                        escape(&t.content)
                    );
                }
            }
        }
        s.push_str("</svg>\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_at_spaces_within_the_room() {
        assert_eq!(wrap("1 KiB keep-alive c1000", 10.0, 66.0), ["1 KiB", "keep-alive", "c1000"]);
        assert_eq!(wrap("one", 10.0, 1.0), ["one"], "a word wider than the room stays whole");
    }

    #[test]
    fn an_upright_text_reads_upwards_from_its_anchor() {
        let t = Text::new(100.0, 200.0, 10.0, "abcde").upright();
        assert_eq!(t.bounds(), [92.0, 170.0, 102.5, 200.0]);
        let t = Text::new(100.0, 200.0, 10.0, "abcde").anchor(Anchor::Middle);
        assert_eq!(t.bounds(), [85.0, 192.0, 115.0, 202.5]);
    }
}
