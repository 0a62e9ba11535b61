//! A latency chart the benchmarks write as SVG: per scenario, daeda's p50 and
//! p99 beside raw Redis's for the same keys in the same run, on a log scale
//! (latencies span two decades between batch 1 and batch 100 under load).
//! Plain SVG text: the README embeds the file, and no plotting crate is needed
//! for a dozen bars.

use std::fmt::Write;

/// One scenario's percentiles, in microseconds.
pub struct Scenario {
    pub label: String,
    pub daeda: (f64, f64),
    /// The raw Redis baseline (p50, p99); None where there is none.
    pub redis: Option<(f64, f64)>,
}

const ROW: f64 = 14.0;
const LEFT: f64 = 185.0;
const WIDTH: f64 = 800.0;
const PLOT: f64 = WIDTH - LEFT - 90.0;

/// The chart as an SVG document.
pub fn svg(title: &str, scenarios: &[Scenario]) -> String {
    let values = scenarios
        .iter()
        .flat_map(|s| [s.daeda.0, s.daeda.1].into_iter().chain(s.redis.into_iter().flat_map(|r| [r.0, r.1])));
    let (lo, hi) = values.fold((f64::MAX, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = (10f64.powf(lo.max(1.0).log10().floor()), 10f64.powf(hi.max(10.0).log10().ceil()));
    let x = |v: f64| LEFT + PLOT * ((v.max(lo).log10() - lo.log10()) / (hi.log10() - lo.log10()));
    let group = |s: &Scenario| ROW * if s.redis.is_some() { 4.0 } else { 2.0 } + 16.0;
    let height = 70.0 + scenarios.iter().map(group).sum::<f64>() + 30.0;
    let mut out = String::new();
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="#fff"/>
<text x="{LEFT}" y="20" font-size="14" font-weight="bold">{}</text>
<rect x="{LEFT}" y="32" width="10" height="10" fill="#2b6cb0"/><text x="{}" y="41">daeda p50 / p99</text>
<rect x="{}" y="32" width="10" height="10" fill="#a0aec0"/><text x="{}" y="41">raw Redis, same keys, same run</text>
"##,
        escape(title),
        LEFT + 14.0,
        LEFT + 140.0,
        LEFT + 154.0
    );
    let top = 56.0;
    let bottom = height - 30.0;
    let mut tick = lo;
    while tick <= hi * 1.0001 {
        let _ = writeln!(
            out,
            r##"<line x1="{0:.1}" y1="{top}" x2="{0:.1}" y2="{bottom}" stroke="#e2e8f0"/><text x="{0:.1}" y="{1}" text-anchor="middle" fill="#4a5568">{2}</text>"##,
            x(tick),
            bottom + 14.0,
            micros(tick)
        );
        tick *= 10.0;
    }
    let mut y = top + 8.0;
    for s in scenarios {
        let bars = [Some(("p50", s.daeda.0, "#2b6cb0")), Some(("p99", s.daeda.1, "#2c5282"))]
            .into_iter()
            .chain(s.redis.map_or([None, None], |r| [Some(("p50", r.0, "#a0aec0")), Some(("p99", r.1, "#718096"))]))
            .flatten();
        let _ = writeln!(
            out,
            r##"<text x="{}" y="{:.1}" text-anchor="end" font-weight="bold">{}</text>"##,
            LEFT - 8.0,
            y + ROW - 3.0,
            escape(&s.label)
        );
        if let Some(r) = s.redis {
            let _ = writeln!(
                out,
                r##"<text x="{}" y="{:.1}" text-anchor="end" fill="#4a5568">p50 {:.2}× · p99 {:.2}×</text>"##,
                LEFT - 8.0,
                y + 2.0 * ROW - 3.0,
                s.daeda.0 / r.0,
                s.daeda.1 / r.1
            );
        }
        for (name, v, fill) in bars {
            let w = x(v) - LEFT;
            let _ = writeln!(
                out,
                r##"<rect x="{LEFT}" y="{y:.1}" width="{w:.1}" height="{:.1}" fill="{fill}"/><text x="{:.1}" y="{:.1}" fill="#1a202c">{name} {}</text>"##,
                ROW - 2.0,
                LEFT + w + 4.0,
                y + ROW - 4.0,
                micros(v)
            );
            y += ROW;
        }
        y += 16.0;
    }
    out.push_str("</svg>\n");
    out
}

fn micros(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.1} ms", v / 1000.0)
    } else {
        format!("{v:.0} µs")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
