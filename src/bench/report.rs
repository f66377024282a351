//! Output: the summary table, the JSON file and the SVG chart (hand-written, no crate).

use std::fmt::Write as _;
use std::path::Path;

use super::error::{BenchError, BenchResult};
use super::progress::group;
use super::run::FanoutReport;
use super::stats::Latency;

/// A plain-text table with left-aligned columns.
#[derive(Debug, Clone, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Self {
        Self {
            header: header.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row (missing cells are blank, extra ones dropped).
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        let mut row: Vec<String> = cells.into_iter().map(Into::into).collect();
        row.resize(self.header.len(), String::new());
        self.rows.push(row);
    }

    /// The table as text, one line per row, with a rule under the header.
    pub fn render(&self) -> String {
        let columns = self.header.len();
        let mut widths = vec![0; columns];
        for row in std::iter::once(&self.header).chain(&self.rows) {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |row: &[String]| {
            let mut out = String::new();
            for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
                if i > 0 {
                    out.push_str("  ");
                }
                out.push_str(cell);
                out.push_str(&" ".repeat(w - cell.chars().count()));
            }
            out.trim_end().to_string()
        };
        let mut out = line(&self.header);
        out.push('\n');
        let total: usize = widths.iter().sum::<usize>() + 2 * columns.saturating_sub(1);
        out.push_str(&"-".repeat(total));
        out.push('\n');
        for row in &self.rows {
            out.push_str(&line(row));
            out.push('\n');
        }
        out
    }
}

/// A rate, grouped: `12,345/s`.
pub fn per_s(rate: f64) -> String {
    format!("{}/s", group(rate.max(0.0).round() as u64))
}

/// µs as milliseconds with two decimals: `1.23 ms`.
pub fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

/// A ratio with two decimals and a ×: `0.42×`.
pub fn ratio(value: f64, reference: f64) -> String {
    if reference > 0.0 {
        format!("{:.3}×", value / reference)
    } else {
        "-".into()
    }
}

/// `p50 / p90 / p99 / max` in ms.
pub fn latency_line(l: &Latency) -> String {
    format!(
        "{:.2} / {:.2} / {:.2} / {:.2} ms",
        l.p50_us as f64 / 1000.0,
        l.p90_us as f64 / 1000.0,
        l.p99_us as f64 / 1000.0,
        l.max_us as f64 / 1000.0
    )
}

/// The `(figure, value)` rows describing a fan-out run.
pub fn fanout_rows(r: &FanoutReport) -> Vec<(String, String)> {
    let mut rows = vec![
        (
            "deliveries received".to_string(),
            format!(
                "{} of {} ({} missing, {} extra, {} stray)",
                group(r.delivered),
                group(r.expected),
                group(r.missing),
                group(r.extra),
                group(r.stray)
            ),
        ),
        ("deliveries/s".into(), per_s(r.deliveries_per_s)),
        (
            "first trigger → last delivery".into(),
            format!("{:.3} s", r.duration_us as f64 / 1e6),
        ),
        (
            "triggers accepted/s".into(),
            format!(
                "{} ({} triggers)",
                per_s(r.triggers_accepted_per_s),
                group(r.triggers as u64)
            ),
        ),
        (
            "trigger response p50/p90/p99/max".into(),
            latency_line(&r.trigger_response),
        ),
        (
            "trigger → delivery p50/p90/p99/max".into(),
            latency_line(&r.latency),
        ),
        (
            "trigger → first delivery p50/p90/p99/max".into(),
            latency_line(&r.first_delivery),
        ),
    ];
    if let Some(p) = &r.persisted {
        rows.push((
            "outcomes persisted (node's counts)".into(),
            format!(
                "{} delivered, {} pending, {} failed{} ({} after the last delivery)",
                group(p.succeeded),
                group(p.pending),
                group(p.failed),
                if p.complete { "" } else { ", INCOMPLETE" },
                ms(p.wait_us)
            ),
        ));
    }
    rows
}

/// Writes `content` to `path`, creating its parent directories.
pub fn write_file(path: &Path, content: &str) -> BenchResult<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| BenchError::io(format!("cannot create {}", parent.display()), e))?;
    }
    std::fs::write(path, content)
        .map_err(|e| BenchError::io(format!("cannot write {}", path.display()), e))
}

/// One line of the chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// `(x, y)` points in data units (seconds, deliveries/s).
    pub points: Vec<(f64, f64)>,
}

/// A horizontal reference line (e.g. the ceiling).
#[derive(Debug, Clone)]
pub struct Reference {
    /// Label drawn on the line.
    pub label: String,
    /// Its y value.
    pub value: f64,
}

/// Line colours, cycled.
const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf",
];
const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;

/// A "nice" tick step (1, 2 or 5 × 10^k) giving about `ticks` intervals up to `max`.
pub fn nice_step(max: f64, ticks: usize) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let raw = max / ticks.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let residual = raw / magnitude;
    let nice = if residual <= 1.0 {
        1.0
    } else if residual <= 2.0 {
        2.0
    } else if residual <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// Escapes text for XML content and attributes.
pub fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Tick label: `12k` for thousands, plain otherwise; seconds keep one decimal when needed.
fn tick_label(v: f64) -> String {
    if v >= 1000.0 && (v / 1000.0).fract() == 0.0 {
        format!("{}k", v / 1000.0)
    } else if v.fract() == 0.0 {
        format!("{v}")
    } else {
        format!("{v:.1}")
    }
}

/// An SVG line chart of `series` (x: seconds, y: deliveries/s) with optional reference
/// lines, axes, ticks and a legend.
pub fn svg_chart(title: &str, series: &[Series], references: &[Reference]) -> String {
    let max_x = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(0.0, f64::max);
    let max_y = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .chain(references.iter().map(|r| r.value))
        .fold(0.0, f64::max);
    let x_step = nice_step(max_x, 10);
    let y_step = nice_step(max_y * 1.05, 6);
    // Whole steps, tolerant of float noise (2.5 / 0.5 must give 5 steps, not 6).
    let x_steps = ((max_x / x_step) - 1e-9).ceil().max(1.0);
    let y_steps = ((max_y * 1.05 / y_step) - 1e-9).ceil().max(1.0);
    let (x_max, y_max) = (x_steps * x_step, y_steps * y_step);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let sx = |x: f64| LEFT + x / x_max * plot_w;
    let sy = |y: f64| TOP + plot_h - y / y_max * plot_h;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        WIDTH / 2.0,
        xml_escape(title)
    );
    // Grid and ticks.
    for k in 0..=y_steps as usize {
        let y = k as f64 * y_step;
        let py = sy(y);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#e0e0e0"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            py + 4.0,
            tick_label(y)
        );
    }
    for k in 0..=x_steps as usize {
        let x = k as f64 * x_step;
        let px = sx(x);
        let _ = writeln!(
            svg,
            r##"<line x1="{px:.1}" y1="{:.1}" x2="{px:.1}" y2="{:.1}" stroke="#999"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            TOP + plot_h,
            TOP + plot_h + 5.0,
            TOP + plot_h + 18.0,
            tick_label((x * 1000.0).round() / 1000.0)
        );
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>"##
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">seconds since the first trigger</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 10.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">deliveries/s</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
    for r in references {
        let py = sy(r.value);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#555" stroke-dasharray="6 4"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#555">{}</text>"##,
            WIDTH - RIGHT,
            WIDTH - RIGHT - 4.0,
            py - 4.0,
            xml_escape(&r.label)
        );
    }
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.8" points="{}"/>"#,
            points.join(" ")
        );
        let ly = TOP + 16.0 + i as f64 * 16.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            LEFT + 12.0,
            LEFT + 32.0,
            LEFT + 38.0,
            ly + 4.0,
            xml_escape(&s.label)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(["figure", "value"]);
        t.row(["deliveries/s", "12,345/s"]);
        t.row(["p99", "1.00 ms"]);
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "figure        value");
        assert_eq!(lines[1], "-".repeat(22));
        assert_eq!(lines[2], "deliveries/s  12,345/s");
        assert_eq!(lines[3], "p99           1.00 ms");
    }

    #[test]
    fn formats() {
        assert_eq!(per_s(12_345.6), "12,346/s");
        assert_eq!(ms(1_234), "1.23 ms");
        assert_eq!(ratio(1.0, 4.0), "0.250×");
        assert_eq!(ratio(1.0, 0.0), "-");
    }

    #[test]
    fn nice_steps() {
        assert_eq!(nice_step(100_000.0, 5), 20_000.0);
        assert_eq!(nice_step(3.2, 10), 0.5);
        assert_eq!(nice_step(0.0, 5), 1.0);
        assert_eq!(nice_step(7.0, 7), 1.0);
    }

    #[test]
    fn svg_has_a_polyline_per_series_and_escapes_text() {
        let series = [
            Series {
                label: "1 × 10,000 <b>".into(),
                points: vec![(0.5, 10_000.0), (1.5, 30_000.0), (2.5, 20_000.0)],
            },
            Series {
                label: "c".into(),
                points: vec![(0.05, 5.0)],
            },
        ];
        let refs = [Reference {
            label: "ceiling 50,000/s".into(),
            value: 50_000.0,
        }];
        let svg = svg_chart("fan-out & more", &series, &refs);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("fan-out &amp; more"));
        assert!(svg.contains("1 × 10,000 &lt;b&gt;"));
        assert!(svg.contains("stroke-dasharray"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        // y axis reaches past the ceiling: 50,000 × 1.05 rounded up to a 10k step.
        assert!(svg.contains(">60k</text>"));
        // The first point sits at x = 0.5 of a 2.5 s axis (5 ticks of 0.5 s).
        let first = LEFT + 0.5 / 2.5 * (WIDTH - LEFT - RIGHT);
        assert!(svg.contains(&format!("points=\"{first:.1},")));
    }

    #[test]
    fn empty_chart_is_still_valid() {
        let svg = svg_chart("nothing", &[], &[]);
        assert!(svg.contains("</svg>"));
        assert!(!svg.contains("NaN"));
    }

    #[test]
    fn writes_files_with_parents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/c.txt");
        write_file(&path, "hi").unwrap();
        assert_eq!(std::fs::read_to_string(path).unwrap(), "hi");
    }
}
