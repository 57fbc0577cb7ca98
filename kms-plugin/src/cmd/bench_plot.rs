//! The picture of a `kms-plugin bench` run: throughput per concurrency (one
//! line per op) beside p50 and p99 latency per concurrency (two lines per
//! op), as one SVG file.
//!
//! plotters draws it with its SVG backend alone: text becomes `<text>`
//! elements the viewer renders, laid out with plotters' built-in size
//! estimate, so no font file, fontconfig or system library is read.

use std::path::Path;

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use super::bench::PhaseResult;

const WIDTH: u32 = 1100;
const HEIGHT: u32 = 460;

/// One colour per op, in the order ops appear.
fn colour(op: &str) -> RGBColor {
    match op {
        "encrypt" => RGBColor(31, 119, 180),
        "decrypt" => RGBColor(214, 39, 40),
        _ => RGBColor(44, 160, 44),
    }
}

/// The series of one op: (concurrency index, value) in concurrency order.
fn series(
    results: &[PhaseResult],
    callers: &[usize],
    op: &str,
    value: impl Fn(&PhaseResult) -> f64,
) -> Vec<(SegmentValue<usize>, f64)> {
    callers
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            results
                .iter()
                .find(|r| r.op == op && r.callers == *c)
                .map(|r| (SegmentValue::CenterOf(i), value(r)))
        })
        .collect()
}

/// Renders `results` (phases of `bench`) as SVG text; `subtitle` names what
/// was measured (the endpoint, the phase length).
pub(crate) fn render(results: &[PhaseResult], subtitle: &str) -> anyhow::Result<String> {
    let mut callers: Vec<usize> = results.iter().map(|r| r.callers).collect();
    callers.dedup();
    let mut ops: Vec<&'static str> = Vec::new();
    for r in results {
        if !ops.contains(&r.op) {
            ops.push(r.op);
        }
    }
    anyhow::ensure!(!callers.is_empty(), "no phase to plot");
    // plotters' integer ranges hold both ends: 0..last is one segment per
    // concurrency.
    let last = callers.len() - 1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        let err = |e: DrawingAreaErrorKind<_>| anyhow::anyhow!("drawing the bench plot: {e}");
        root.fill(&WHITE).map_err(err)?;
        let root = root
            .titled(&format!("kms-plugin bench: {subtitle}"), ("sans-serif", 22))
            .map_err(err)?;
        let (left, right) = root.split_horizontally(WIDTH / 2);

        let max_ops = results.iter().map(|r| r.ops_per_sec).fold(0.0, f64::max);
        let mut chart = ChartBuilder::on(&left)
            .caption("throughput", ("sans-serif", 19))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d((0..last).into_segmented(), 0.0..max_ops * 1.15 + 1.0)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            .x_desc("concurrent callers")
            .y_desc("calls/s")
            .x_label_formatter(&|v| label(v, &callers))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(err)?;
        for op in &ops {
            let c = colour(op);
            let points = series(results, &callers, op, |r| r.ops_per_sec);
            chart
                .draw_series(LineSeries::new(points.clone(), c.stroke_width(2)))
                .map_err(err)?
                .label(*op)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
            chart
                .draw_series(points.into_iter().map(|p| Circle::new(p, 4, c.filled())))
                .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font(("sans-serif", 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;

        let max_us = results.iter().map(|r| r.p99_us).fold(0.0, f64::max);
        let mut chart = ChartBuilder::on(&right)
            .caption("latency", ("sans-serif", 19))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d((0..last).into_segmented(), 0.0..max_us * 1.15 + 1.0)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            .x_desc("concurrent callers")
            .y_desc("microseconds")
            .x_label_formatter(&|v| label(v, &callers))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(err)?;
        for op in &ops {
            let c = colour(op);
            let p50 = series(results, &callers, op, |r| r.p50_us);
            let p99 = series(results, &callers, op, |r| r.p99_us);
            chart
                .draw_series(LineSeries::new(p50.clone(), c.stroke_width(2)))
                .map_err(err)?
                .label(format!("{op} p50"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
            chart
                .draw_series(p50.into_iter().map(|p| Circle::new(p, 4, c.filled())))
                .map_err(err)?;
            let light = c.mix(0.5);
            chart
                .draw_series(LineSeries::new(p99.clone(), light.stroke_width(2)))
                .map_err(err)?
                .label(format!("{op} p99"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], light.stroke_width(2))
                });
            chart
                .draw_series(
                    p99.into_iter()
                        .map(|p| TriangleMarker::new(p, 5, light.filled())),
                )
                .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font(("sans-serif", 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// The concurrency a segment of the x axis stands for.
fn label(v: &SegmentValue<usize>, callers: &[usize]) -> String {
    match v {
        SegmentValue::CenterOf(i) => callers.get(*i).map(|c| c.to_string()).unwrap_or_default(),
        _ => String::new(),
    }
}

/// Writes the picture of `results` to `path`.
pub(crate) fn write(path: &Path, results: &[PhaseResult], subtitle: &str) -> anyhow::Result<()> {
    let svg = render(results, subtitle)?;
    std::fs::write(path, svg).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(op: &'static str, callers: usize, ops: f64) -> PhaseResult {
        PhaseResult {
            op,
            callers,
            calls: 10,
            errors: 0,
            ops_per_sec: ops,
            p50_us: 40.0,
            p99_us: 90.0,
        }
    }

    #[test]
    fn names_every_series_and_concurrency() {
        let results = [
            phase("encrypt", 1, 1000.0),
            phase("decrypt", 1, 1100.0),
            phase("encrypt", 16, 9000.0),
            phase("decrypt", 16, 9500.0),
        ];
        let svg = render(&results, "test").unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        // plotters writes each text on a line of its own inside <text>.
        let texts: Vec<&str> = svg.lines().map(str::trim).collect();
        for want in [
            "encrypt",
            "decrypt",
            "encrypt p99",
            "decrypt p50",
            "16",
            "1",
        ] {
            assert!(texts.contains(&want), "{want} missing: {svg}");
        }
    }

    #[test]
    fn nothing_to_plot_is_an_error() {
        assert!(render(&[], "x").is_err());
    }
}
