//! The picture of a run (`run.svg` in its results folder), drawn with `plotters`:
//! what clients got each second — 2xx and deliberate refusals, p99 (all requests and
//! the reads alone), errors, and the consumer groups' lag — with each fault's window
//! shaded, so that a glance says when it hit, what it did, and when the platform was
//! back.

use super::Fault;
use super::watch::Sample;
use crate::load::run::LoadReport;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

const FAULT: RGBColor = RGBColor(255, 205, 205);
const OK: RGBColor = RGBColor(31, 119, 180);
const REFUSED: RGBColor = RGBColor(255, 127, 14);
const READS: RGBColor = RGBColor(44, 160, 44);
const ERRORS: RGBColor = RGBColor(214, 39, 40);
const LAG: RGBColor = RGBColor(148, 103, 189);

/// One line of a panel: its legend, colour and (second, value) points.
type Line<'a> = (&'a str, RGBColor, Vec<(f64, f64)>);

/// One panel: `series` over the run's seconds, faults shaded.
fn panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    caption: &str,
    end: f64,
    faults: &[Fault],
    series: &[Line<'_>],
) -> anyhow::Result<()> {
    let top = series
        .iter()
        .flat_map(|(_, _, points)| points.iter().map(|p| p.1))
        .fold(1.0, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 15))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..end, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("seconds into the run")
        .light_line_style(WHITE)
        .draw()?;
    chart.draw_series(faults.iter().map(|f| {
        let from = f.at_ms as f64 / 1000.0;
        // An instant fault (a SIGKILL) still gets a visible band.
        let to = (f.end_ms() as f64 / 1000.0).max(from + 0.5);
        Rectangle::new([(from, 0.0), (to, top)], FAULT.filled())
    }))?;
    for (name, colour, points) in series {
        let colour = *colour;
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                colour.stroke_width(2),
            ))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// Draws the run to `path` (SVG).
pub fn draw(
    path: &Path,
    title: &str,
    load: &LoadReport,
    faults: &[Fault],
    samples: &[Sample],
) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (960, 1020)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 20))?;
    let panels = root.split_evenly((4, 1));
    let end = load.seconds.last().map_or(1.0, |s| s.t as f64 + 1.0);
    let per_second = |f: &dyn Fn(&crate::load::run::Second) -> f64| -> Vec<(f64, f64)> {
        load.seconds.iter().map(|s| (s.t as f64, f(s))).collect()
    };
    panel(
        &panels[0],
        "answers per second (faults shaded)",
        end,
        faults,
        &[
            ("2xx", OK, per_second(&|s| s.counts.ok as f64)),
            (
                "429/503 (refused on purpose)",
                REFUSED,
                per_second(&|s| s.counts.refused as f64),
            ),
        ],
    )?;
    panel(
        &panels[1],
        "p99 latency, ms",
        end,
        faults,
        &[
            ("all requests", OK, per_second(&|s| s.p99_ms)),
            (
                "reads (menu, status)",
                READS,
                per_second(&|s| s.reads_p99_ms),
            ),
        ],
    )?;
    panel(
        &panels[2],
        "errors per second (4xx, 5xx, no answer)",
        end,
        faults,
        &[("errors", ERRORS, per_second(&|s| s.counts.errors() as f64))],
    )?;
    panel(
        &panels[3],
        "consumer lag, messages (every group of the run)",
        end,
        faults,
        &[(
            "lag",
            LAG,
            samples
                .iter()
                .filter_map(|s| Some((s.t_ms as f64 / 1000.0, s.lag? as f64)))
                .collect(),
        )],
    )?;
    root.present()?;
    Ok(())
}
