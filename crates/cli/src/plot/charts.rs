//! The figures, drawn with plotters.

use super::Fit;
use super::stats::Ci;
use anyhow::Result;
use llm_auction_mechanism::metrics::least_squares;
use plotters::prelude::*;
use std::path::Path;

/// One curve: `(M, Ci)` points.
pub(super) struct Series {
    pub name: String,
    pub color: RGBColor,
    pub points: Vec<(f64, Ci)>,
}

/// A line chart of mean curves with their intervals over `M` (log axis), and horizontal reference
/// lines.
pub(super) fn line_chart(
    path: &Path,
    title: &str,
    y_label: &str,
    series: &[Series],
    hlines: &[(&str, f64, RGBColor)],
) -> Result<()> {
    let root = BitMapBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let xs: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect();
    let mut ys: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().flat_map(|p| [p.1.lo, p.1.hi]))
        .filter(|v| v.is_finite())
        .collect();
    ys.extend(hlines.iter().map(|h| h.1).filter(|v| v.is_finite()));
    let (x0, x1) = (
        xs.iter().copied().fold(f64::INFINITY, f64::min),
        xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    );
    let (mut y0, mut y1) = (
        ys.iter().copied().fold(f64::INFINITY, f64::min),
        ys.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    );
    if !(y0.is_finite() && y1.is_finite()) {
        (y0, y1) = (0.0, 1.0);
    }
    let pad = ((y1 - y0) * 0.08).max(1e-6);
    // Ticks at the grid's M values only (a log axis would otherwise label 1..10 and skip 16).
    let mut ticks = xs.clone();
    ticks.sort_by(f64::total_cmp);
    ticks.dedup();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (x0 * 0.85..x1 * 1.15).log_scale().with_key_points(ticks),
            (y0 - pad)..(y1 + pad),
        )?;
    chart
        .configure_mesh()
        .x_desc("number of candidates M (log scale)")
        .y_desc(y_label)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()?;
    for s in series {
        let color = s.color;
        chart
            .draw_series(LineSeries::new(
                s.points.iter().map(|p| (p.0, p.1.mean)),
                color.stroke_width(2),
            ))?
            .label(s.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(
            s.points
                .iter()
                .map(|p| Circle::new((p.0, p.1.mean), 4, color.filled())),
        )?;
        chart.draw_series(s.points.iter().filter(|p| p.1.lo.is_finite()).map(|p| {
            PathElement::new(vec![(p.0, p.1.lo), (p.0, p.1.hi)], color.stroke_width(2))
        }))?;
    }
    for &(name, h, color) in hlines.iter().filter(|h| h.1.is_finite()) {
        chart
            .draw_series(LineSeries::new(
                vec![(x0 * 0.85, h), (x1 * 1.15, h)],
                color.stroke_width(1),
            ))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()?;
    Ok(())
}

/// A scatter of (reward gain, utility gain) points with its least-squares line, which it returns.
pub(super) fn scatter_chart(
    path: &Path,
    title: &str,
    points: &[(f64, f64)],
) -> Result<Option<Fit>> {
    let root = BitMapBackend::new(path, (800, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let fit = if points.len() >= 3 {
        let (x, y): (Vec<f64>, Vec<f64>) = points.iter().copied().unzip();
        least_squares(&x, &y).ok()
    } else {
        None
    };
    let (xs, ys): (Vec<f64>, Vec<f64>) = points.iter().copied().unzip();
    let lim = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if lo.is_finite() && hi > lo {
            (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
        } else {
            (-1.0, 1.0)
        }
    };
    let (xr, yr) = (lim(&xs), lim(&ys));
    let caption = match fit {
        Some(f) => format!(
            "{title}: slope {:.2}, R² {:.2}, n = {}",
            f.slope,
            f.r2,
            points.len()
        ),
        None => format!("{title}: n = {}", points.len()),
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(xr.0..xr.1, yr.0..yr.1)?;
    chart
        .configure_mesh()
        .x_desc("reward gain")
        .y_desc("utility gain")
        .draw()?;
    chart.draw_series(
        points
            .iter()
            .map(|&(x, y)| Circle::new((x, y), 3, BLUE.mix(0.5).filled())),
    )?;
    if let Some(f) = fit {
        chart.draw_series(LineSeries::new(
            vec![
                (xr.0, f.intercept + f.slope * xr.0),
                (xr.1, f.intercept + f.slope * xr.1),
            ],
            RED.stroke_width(2),
        ))?;
    }
    root.present()?;
    Ok(fit.map(|fit| Fit {
        fit,
        n: points.len(),
    }))
}
