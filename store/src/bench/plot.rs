//! The picture of a `secret-store bench` run, as one SVG: on the left the
//! rate of every provider in every phase (write, read-cold, read-warm) with
//! the share spent in encryption written over each bar; on the right the
//! per-stage breakdown of a write and a warm read per provider, one stacked
//! bar each (mean nanoseconds per operation, by stage).
//!
//! plotters draws it with its SVG backend alone: text becomes `<text>`
//! elements the viewer renders, laid out with plotters' built-in size
//! estimate, so no font file, fontconfig or system library is read.

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use super::{PhaseFigures, StageFigures};

const WIDTH: u32 = 1300;
const HEIGHT: u32 = 520;

/// The phases of the left chart, in order, with their colours.
const PHASES: [(&str, RGBColor); 3] = [
    ("write", RGBColor(31, 119, 180)),
    ("read-cold", RGBColor(255, 127, 14)),
    ("read-warm", RGBColor(44, 160, 44)),
];

/// The passes of the right chart.
const PASSES: [&str; 2] = ["write", "read-warm"];

/// One colour per stage (in `Stage::ALL` order), then "other".
const STAGE_COLOURS: [RGBColor; 10] = [
    RGBColor(127, 127, 127), // engine
    RGBColor(188, 189, 34),  // transform
    RGBColor(23, 190, 207),  // validate
    RGBColor(148, 103, 189), // encode
    RGBColor(140, 86, 75),   // decode
    RGBColor(227, 119, 194), // parse
    RGBColor(255, 127, 14),  // cache
    RGBColor(214, 39, 40),   // derive
    RGBColor(31, 119, 180),  // aead
    RGBColor(210, 210, 210), // other
];

/// Renders the phases and breakdowns of one run as SVG text; `subtitle`
/// names what was measured.
pub(super) fn render(
    phases: &[PhaseFigures],
    stages: &[StageFigures],
    subtitle: &str,
) -> anyhow::Result<String> {
    let mut providers: Vec<&str> = Vec::new();
    for f in phases {
        if !providers.contains(&f.provider.as_str()) {
            providers.push(&f.provider);
        }
    }
    anyhow::ensure!(!providers.is_empty(), "no phase to plot");
    // Bars: phase-major on the left, pass-major on the right; a segment per bar.
    let left: Vec<(&str, &PhaseFigures)> = PHASES
        .iter()
        .flat_map(|(phase, _)| {
            providers.iter().filter_map(move |p| {
                phases
                    .iter()
                    .find(|f| f.provider == *p && f.phase == *phase)
                    .map(|f| (*p, f))
            })
        })
        .collect();
    let right: Vec<(&str, &StageFigures)> = PASSES
        .iter()
        .flat_map(|pass| {
            providers.iter().filter_map(move |p| {
                stages
                    .iter()
                    .find(|f| f.provider == *p && f.phase == *pass)
                    .map(|f| (*p, f))
            })
        })
        .collect();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        let err = |e: DrawingAreaErrorKind<_>| anyhow::anyhow!("drawing the bench plot: {e}");
        root.fill(&WHITE).map_err(err)?;
        let root = root
            .titled(
                &format!("secret-store bench: {subtitle}"),
                ("sans-serif", 22),
            )
            .map_err(err)?;
        let (l, r) = root.split_horizontally(WIDTH / 2);

        // Left: rates.
        let max = left.iter().map(|(_, f)| f.ops_per_sec).fold(0.0, f64::max);
        let n = left.len().max(1);
        let mut chart = ChartBuilder::on(&l)
            .caption(
                "rate per provider and phase (crypto share over each bar)",
                ("sans-serif", 17),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d((0..n - 1).into_segmented(), 0.0..max * 1.2 + 1.0)
            .map_err(err)?;
        let names: Vec<&str> = left.iter().map(|(p, _)| *p).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n)
            .label_style(("sans-serif", 13))
            .axis_desc_style(("sans-serif", 15))
            .y_desc("operations/s")
            .x_label_formatter(&|v| segment_label(v, &names))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(err)?;
        for (phase, colour) in PHASES {
            let bars: Vec<(usize, f64)> = left
                .iter()
                .enumerate()
                .filter(|(_, (_, f))| f.phase == phase)
                .map(|(i, (_, f))| (i, f.ops_per_sec))
                .collect();
            if bars.is_empty() {
                continue;
            }
            chart
                .draw_series(
                    Histogram::vertical(&chart)
                        .style(colour.filled())
                        .margin(6)
                        .data(bars),
                )
                .map_err(err)?
                .label(phase)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 14, y + 5)], colour.filled())
                });
        }
        chart
            .draw_series(left.iter().enumerate().map(|(i, (_, f))| {
                Text::new(
                    format!("{:.0}%", 100.0 * f.crypto_share),
                    (SegmentValue::CenterOf(i), f.ops_per_sec + max * 0.02),
                    ("sans-serif", 12).into_font().color(&BLACK),
                )
            }))
            .map_err(err)?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font(("sans-serif", 13))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;

        // Right: the breakdown, one stacked bar per provider and pass.
        let cumulative = |f: &StageFigures| -> Vec<f64> {
            let mut sum = 0.0;
            f.stages
                .iter()
                .map(|(_, v)| *v)
                .chain(std::iter::once(f.other_ns))
                .map(|v| {
                    sum += v;
                    sum
                })
                .collect()
        };
        let max = right.iter().map(|(_, f)| f.total_ns).fold(0.0, f64::max);
        let n = right.len().max(1);
        let mut chart = ChartBuilder::on(&r)
            .caption(
                "where a write and a warm read go (ns per operation, one thread)",
                ("sans-serif", 17),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d((0..n - 1).into_segmented(), 0.0..max * 1.25 + 1.0)
            .map_err(err)?;
        let names: Vec<String> = right
            .iter()
            .map(|(p, f)| format!("{p} {}", short_pass(f.phase)))
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n)
            .label_style(("sans-serif", 12))
            .axis_desc_style(("sans-serif", 15))
            .y_desc("nanoseconds")
            .x_label_formatter(&|v| segment_label(v, &names))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(err)?;
        let stage_names: Vec<&'static str> = right
            .first()
            .map(|(_, f)| f.stages.iter().map(|(s, _)| *s).chain(["other"]).collect())
            .unwrap_or_default();
        // Painted from the top of each stack down: each stage's bar reaches
        // the sum of the stages up to it, so what shows is its own share.
        for (k, name) in stage_names.iter().enumerate().rev() {
            let colour = STAGE_COLOURS[k % STAGE_COLOURS.len()];
            let bars: Vec<(usize, f64)> = right
                .iter()
                .enumerate()
                .map(|(i, (_, f))| (i, cumulative(f)[k]))
                .collect();
            let used = right.iter().any(|(_, f)| {
                let c = cumulative(f);
                c[k] - if k == 0 { 0.0 } else { c[k - 1] } > 0.0
            });
            let series = chart
                .draw_series(
                    Histogram::vertical(&chart)
                        .style(colour.filled())
                        .margin(10)
                        .data(bars),
                )
                .map_err(err)?;
            if used {
                series.label(*name).legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 14, y + 5)], colour.filled())
                });
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font(("sans-serif", 12))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

fn short_pass(phase: &str) -> &str {
    match phase {
        "read-warm" => "read",
        other => other,
    }
}

/// The name of the bar a segment of the x axis stands for.
fn segment_label(v: &SegmentValue<usize>, names: &[&str]) -> String {
    match v {
        SegmentValue::CenterOf(i) => names.get(*i).map(|s| s.to_string()).unwrap_or_default(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(provider: &str, phase: &'static str, ops: f64) -> PhaseFigures {
        PhaseFigures {
            engine: "rocksdb",
            provider: provider.into(),
            phase,
            ops: 100,
            seconds: 1.0,
            ops_per_sec: ops,
            mb_per_sec: 1.0,
            p50_us: 10.0,
            p99_us: 20.0,
            plugin_calls: 0,
            crypto_share: 0.25,
            storage_share: 0.5,
        }
    }

    fn stage(provider: &str, phase: &'static str) -> StageFigures {
        StageFigures {
            engine: "rocksdb",
            provider: provider.into(),
            phase,
            ops: 100,
            total_ns: 9000.0,
            stages: vec![("engine", 5000.0), ("aead", 1000.0)],
            other_ns: 3000.0,
        }
    }

    #[test]
    fn names_every_provider_phase_and_stage() {
        let mut phases = Vec::new();
        let mut stages = Vec::new();
        for p in ["identity", "kms-v2"] {
            for (ph, _) in PHASES {
                phases.push(phase(p, ph, 1000.0));
            }
            stages.push(stage(p, "write"));
            stages.push(stage(p, "read-warm"));
        }
        let svg = render(&phases, &stages, "test run").unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        let texts: Vec<&str> = svg.lines().map(str::trim).collect();
        for want in [
            "identity",
            "kms-v2",
            "write",
            "read-cold",
            "read-warm",
            "kms-v2 read",
            "identity write",
            "engine",
            "aead",
            "other",
            "25%",
        ] {
            assert!(texts.contains(&want), "{want} missing: {svg}");
        }
        assert!(svg.matches("<rect").count() > 12, "bars drawn: {svg}");
    }

    #[test]
    fn nothing_to_plot_is_an_error() {
        assert!(render(&[], &[], "x").is_err());
    }
}
