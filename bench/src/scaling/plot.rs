//! One SVG per side and workload: throughput (million operations per second, all CPUs
//! together, log scale) against CPUs (log scale, so 1, 2, 4, 8 are evenly spaced), one
//! line per allocator. The oversubscribed part (more CPUs than the host's cores) is
//! shaded. Drawn with `plotters`' SVG backend and its own text metrics: no system font
//! is read.

use std::path::Path;

use plotters::prelude::*;

use crate::report::Data;

const COLOURS: [RGBColor; 8] = [
    RGBColor(0xd6, 0x27, 0x28), // mm: red, drawn thick
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
];

fn draw_error(error: impl std::fmt::Display) -> String {
    format!("plot: {error}")
}

/// Writes the plot of `side`/`workload` to `path`.
pub fn throughput(data: &Data, side: &str, workload: &str, path: &Path) -> Result<(), String> {
    let cpus = data.cpus(side);
    let allocators = data.allocators(side);
    let points = |alloc: &str| -> Vec<(f64, f64)> {
        cpus.iter()
            .filter_map(|&n| {
                let cell = data.get(side, workload, alloc, n)?;
                Some((n as f64, cell.ops_per_s / 1e6))
            })
            .collect()
    };
    let all: Vec<f64> = allocators
        .iter()
        .flat_map(|a| points(a))
        .map(|(_, y)| y)
        .filter(|&y| y > 0.0)
        .collect();
    // Room below the lowest line for the legend (lower right).
    let low = all.iter().copied().fold(f64::INFINITY, f64::min).min(1.0) / 8.0;
    let high = all.iter().copied().fold(0.0, f64::max).max(1.0) * 2.0;
    let most = *cpus.last().unwrap_or(&1) as f64;

    let root = SVGBackend::new(path, (800, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let title = format!("{workload}: {}", data.side_title(side));
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d((0.9f64..most * 1.1).log_scale(), (low..high).log_scale())
        .map_err(draw_error)?;
    // The shade first, so that the grid stays visible over it.
    if most > data.cores as f64 {
        let shade = RGBColor(0xee, 0xee, 0xee).filled();
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(data.cores as f64 * 1.2, low), (most * 1.1, high)],
                shade,
            )))
            .map_err(draw_error)?;
    }
    chart
        .configure_mesh()
        .x_desc(format!(
            "CPUs (shaded: more than the host's {} cores, oversubscribed)",
            data.cores
        ))
        .y_desc("million alloc+free operations per second")
        .light_line_style(TRANSPARENT)
        .y_labels(16)
        // Label the CPU counts measured (powers of two), not every integer.
        .x_label_formatter(&|x| {
            let n = x.round() as u64;
            if n.is_power_of_two() && (x - n as f64).abs() < 1e-6 {
                n.to_string()
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| {
            if *y >= 1.0 {
                format!("{y:.0}")
            } else {
                format!("{y:.2}")
            }
        })
        .draw()
        .map_err(draw_error)?;
    for (i, alloc) in allocators.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let width = if alloc == "mm" { 3 } else { 2 };
        let series = points(alloc);
        chart
            .draw_series(LineSeries::new(series.clone(), colour.stroke_width(width)))
            .map_err(draw_error)?
            .label(alloc.as_str())
            .legend(move |(x, y)| {
                PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(width))
            });
        chart
            .draw_series(
                series
                    .into_iter()
                    .map(|p| Circle::new(p, 4, colour.filled())),
            )
            .map_err(draw_error)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(draw_error)?;
    root.present().map_err(draw_error)?;
    Ok(())
}
