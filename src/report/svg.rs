//! A minimal SVG canvas for the plots: panels with linear or percentile axes, polylines, bars
//! and text, written as plain SVG 1.1 with no fonts or system libraries needed.
//!
//! Why hand-written instead of `plotters`: the plots need an HdrHistogram percentile axis
//! (1/(1 − p) on a log scale, labelled 90 %, 99 %, 99.9 %), which plotters has no ready axis
//! for; the SVG here is a few hundred lines, deterministic (tests compare counts and labels
//! exactly), and adds no dependency to the binary. Every series is one element with a
//! `data-series` attribute, so tests and scripts can find it.

use std::fmt::Write as _;

/// Escapes text for an XML text node or attribute value.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters are not allowed in XML 1.0.
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// `text` in lines of at most `width` characters, broken at spaces where possible.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        let fits = line.chars().count() + 1 + word.chars().count() <= width;
        if !line.is_empty() && !fits {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
        while line.chars().count() > width {
            let head: String = line.chars().take(width).collect();
            line = line.chars().skip(width).collect();
            lines.push(head);
        }
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// Series colours, colour-blind safe (Okabe–Ito).
pub const COLOURS: [&str; 6] = [
    "#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9",
];

/// A number as a short axis label: no trailing zeros, at most 3 decimals.
pub fn short_number(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let text = format!("{v:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".into()
    } else {
        text.to_string()
    }
}

/// Ticks for a linear axis from 0 (or `lo`) to at least `hi`: a 1-2-5 step giving about five
/// ticks. Returns (ticks, the axis top).
pub fn nice_ticks(lo: f64, hi: f64) -> (Vec<f64>, f64) {
    let hi = if hi.is_finite() && hi > lo {
        hi
    } else {
        lo + 1.0
    };
    let raw = (hi - lo) / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    let top = (hi / step).ceil() * step;
    let start = (lo / step).floor() * step;
    let n = ((top - start) / step).round() as usize;
    let ticks = (0..=n).map(|i| start + i as f64 * step).collect();
    (ticks, top)
}

/// The SVG document being built.
pub struct Canvas {
    pub width: f64,
    body: String,
    height: f64,
}

/// A rectangle on the canvas where one plot is drawn, with its data ranges.
#[derive(Debug, Clone, Copy)]
pub struct Frame {
    pub left: f64,
    pub top: f64,
    pub width: f64,
    pub height: f64,
    pub x: (f64, f64),
    pub y: (f64, f64),
    /// x is log10 of the data (the percentile axis).
    pub x_log: bool,
}

impl Frame {
    /// Canvas x of data `x` (clamped into the frame).
    pub fn px(&self, x: f64) -> f64 {
        let (x, lo, hi) = if self.x_log {
            (x.max(1e-300).log10(), self.x.0.log10(), self.x.1.log10())
        } else {
            (x, self.x.0, self.x.1)
        };
        let t = if hi > lo { (x - lo) / (hi - lo) } else { 0.0 };
        self.left + t.clamp(0.0, 1.0) * self.width
    }

    /// Canvas y of data `y` (clamped into the frame).
    pub fn py(&self, y: f64) -> f64 {
        let (lo, hi) = self.y;
        let t = if hi > lo { (y - lo) / (hi - lo) } else { 0.0 };
        self.top + self.height - t.clamp(0.0, 1.0) * self.height
    }
}

impl Canvas {
    pub fn new(width: f64) -> Self {
        Canvas {
            width,
            body: String::new(),
            height: 0.0,
        }
    }

    /// Grows the canvas to include `y`.
    pub fn reach(&mut self, y: f64) {
        self.height = self.height.max(y);
    }

    /// A text element; `anchor` is start, middle or end.
    pub fn text(&mut self, x: f64, y: f64, size: f64, anchor: &str, class: &str, text: &str) {
        let _ = writeln!(
            self.body,
            r#"<text class="{class}" x="{x:.1}" y="{y:.1}" font-size="{size}" text-anchor="{anchor}">{}</text>"#,
            escape(text)
        );
        self.reach(y + size * 0.4);
    }

    /// Text rotated a quarter turn (a y-axis title).
    pub fn vertical_text(&mut self, x: f64, y: f64, size: f64, class: &str, text: &str) {
        let _ = writeln!(
            self.body,
            r#"<text class="{class}" x="{x:.1}" y="{y:.1}" font-size="{size}" text-anchor="middle" transform="rotate(-90 {x:.1} {y:.1})">{}</text>"#,
            escape(text)
        );
    }

    /// Lines of a caption, wrapped at spaces before `chars` characters (a longer word is cut);
    /// returns the y after them.
    pub fn wrapped_text(&mut self, x: f64, mut y: f64, size: f64, chars: usize, text: &str) -> f64 {
        for line in wrap(text, chars.max(1)) {
            self.text(x, y, size, "start", "caption", &line);
            y += size * 1.3;
        }
        y
    }

    /// Draws a frame's box, grid, ticks and titles. `x_ticks` are (data value, label).
    pub fn axes(
        &mut self,
        f: &Frame,
        title: &str,
        x_title: &str,
        y_title: &str,
        x_ticks: &[(f64, String)],
        y_ticks: &[f64],
    ) {
        self.text(f.left, f.top - 10.0, 15.0, "start", "panel-title", title);
        let _ = writeln!(
            self.body,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#ffffff" stroke="#444444" stroke-width="1"/>"##,
            f.left, f.top, f.width, f.height
        );
        for (x, label) in x_ticks {
            let px = f.px(*x);
            let _ = writeln!(
                self.body,
                r##"<line x1="{px:.1}" y1="{:.1}" x2="{px:.1}" y2="{:.1}" stroke="#dddddd" stroke-width="1"/>"##,
                f.top,
                f.top + f.height
            );
            self.text(px, f.top + f.height + 16.0, 11.0, "middle", "x-tick", label);
        }
        for &y in y_ticks {
            let py = f.py(y);
            let _ = writeln!(
                self.body,
                r##"<line x1="{:.1}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#dddddd" stroke-width="1"/>"##,
                f.left,
                f.left + f.width
            );
            self.text(
                f.left - 6.0,
                py + 4.0,
                11.0,
                "end",
                "y-tick",
                &short_number(y),
            );
        }
        self.text(
            f.left + f.width / 2.0,
            f.top + f.height + 36.0,
            12.0,
            "middle",
            "x-title",
            x_title,
        );
        self.vertical_text(
            f.left - 48.0,
            f.top + f.height / 2.0,
            12.0,
            "y-title",
            y_title,
        );
    }

    /// A polyline series of data points.
    pub fn polyline(&mut self, f: &Frame, series: &str, colour: &str, points: &[(f64, f64)]) {
        let coords: Vec<String> = points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", f.px(x), f.py(y)))
            .collect();
        let _ = writeln!(
            self.body,
            r#"<polyline data-series="{}" fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            escape(series),
            coords.join(" ")
        );
    }

    /// A group of rectangles (bars or ranges) forming one series; each is (x0, y0, x1, y1) in
    /// data units.
    pub fn rects(&mut self, f: &Frame, series: &str, colour: &str, rects: &[(f64, f64, f64, f64)]) {
        let _ = writeln!(
            self.body,
            r#"<g data-series="{}" fill="{colour}">"#,
            escape(series)
        );
        for &(x0, y0, x1, y1) in rects {
            let (a, b) = (f.px(x0), f.px(x1));
            let (c, d) = (f.py(y1), f.py(y0));
            // At least one pixel wide, so a single lost datagram shows.
            let _ = writeln!(
                self.body,
                r#"<rect x="{:.2}" y="{:.1}" width="{:.2}" height="{:.1}"/>"#,
                a.min(b),
                c.min(d),
                (b - a).abs().max(1.0),
                (d - c).abs()
            );
        }
        self.body.push_str("</g>\n");
    }

    /// A vertical whisker from `lo` to `hi` at data `x` (a spread over repeats), capped.
    pub fn whisker(&mut self, f: &Frame, series: &str, x: f64, lo: f64, hi: f64) {
        let (px, top, bottom) = (f.px(x), f.py(hi), f.py(lo));
        let _ = writeln!(
            self.body,
            r##"<path data-series="{}-spread" d="M{px:.1},{bottom:.1}V{top:.1}M{:.1},{top:.1}h10M{:.1},{bottom:.1}h10" stroke="#222222" stroke-width="1.5" fill="none"/>"##,
            escape(series),
            px - 5.0,
            px - 5.0
        );
    }

    /// A dashed horizontal line across the frame at data `y`, labelled at its right end.
    pub fn marker_line(&mut self, f: &Frame, series: &str, y: f64, label: &str) {
        let py = f.py(y);
        let _ = writeln!(
            self.body,
            r##"<line data-series="{}" x1="{:.1}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#777777" stroke-width="1" stroke-dasharray="5,4"/>"##,
            escape(series),
            f.left,
            f.left + f.width
        );
        self.text(
            f.left + f.width - 4.0,
            py - 4.0,
            11.0,
            "end",
            "marker",
            label,
        );
    }

    /// A legend row at the top right of a frame.
    pub fn legend(&mut self, f: &Frame, entries: &[(&str, &str)]) {
        let mut x = f.left + f.width;
        for (label, colour) in entries.iter().rev() {
            let w = 7.0 * label.chars().count() as f64 + 22.0;
            x -= w;
            let _ = writeln!(
                self.body,
                r#"<rect class="legend" x="{:.1}" y="{:.1}" width="12" height="12" fill="{colour}"/>"#,
                x,
                f.top - 22.0
            );
            self.text(x + 16.0, f.top - 12.0, 11.0, "start", "legend", label);
        }
    }

    /// Centred grey text inside a frame (nothing to draw, and why).
    pub fn note(&mut self, f: &Frame, text: &str) {
        self.text(
            f.left + f.width / 2.0,
            f.top + f.height / 2.0,
            12.0,
            "middle",
            "note",
            text,
        );
    }

    /// The finished document.
    pub fn finish(self, title: &str) -> String {
        let height = (self.height + 20.0).ceil();
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"{w}\" height=\"{height}\" \
             viewBox=\"0 0 {w} {height}\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n\
             <title>{}</title>\n\
             <rect width=\"100%\" height=\"100%\" fill=\"#fafafa\"/>\n{}</svg>\n",
            escape(title),
            self.body,
            w = self.width
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_for_xml() {
        assert_eq!(escape("a<b & 'c'\u{1}"), "a&lt;b &amp; &apos;c&apos; ");
    }

    #[test]
    fn ticks_step_by_one_two_or_five() {
        assert_eq!(
            nice_ticks(0.0, 9.0),
            (vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0], 10.0)
        );
        let (ticks, top) = nice_ticks(0.0, 0.0);
        assert_eq!(top, 1.0);
        assert_eq!(ticks.first(), Some(&0.0));
        assert_eq!(nice_ticks(0.0, 480.0).1, 500.0);
    }

    #[test]
    fn captions_wrap_at_spaces_and_cut_long_words() {
        assert_eq!(wrap("ab cd ef", 5), vec!["ab cd", "ef"]);
        assert_eq!(wrap("abcdefgh x", 3), vec!["abc", "def", "gh", "x"]);
        assert_eq!(wrap("", 4), vec![""]);
    }

    #[test]
    fn numbers_are_short() {
        assert_eq!(short_number(2.5), "2.5");
        assert_eq!(short_number(100.0), "100");
        assert_eq!(short_number(0.0), "0");
    }

    #[test]
    fn the_log_axis_puts_decades_evenly() {
        let f = Frame {
            left: 0.0,
            top: 0.0,
            width: 300.0,
            height: 100.0,
            x: (1.0, 1000.0),
            y: (0.0, 10.0),
            x_log: true,
        };
        assert!((f.px(10.0) - 100.0).abs() < 1e-9);
        assert!((f.px(100.0) - 200.0).abs() < 1e-9);
        assert_eq!(f.py(10.0), 0.0);
        assert_eq!(f.py(0.0), 100.0);
    }
}
