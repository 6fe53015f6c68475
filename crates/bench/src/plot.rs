//! The cost–accuracy plot: one point per policy, log cost axis, the Pareto frontier drawn.

use std::path::Path;

use plotters::prelude::*;

/// (label, cost per item in USD, accuracy in 0..=1).
pub type Point = (String, f64, f64);

/// Points on the frontier: no other point is at most as expensive and at least as accurate
/// (and strictly better in one). Sorted by cost.
pub fn pareto(points: &[Point]) -> Vec<Point> {
    let mut front: Vec<Point> = points
        .iter()
        .filter(|(_, c, a)| {
            !points
                .iter()
                .any(|(_, c2, a2)| c2 <= c && a2 >= a && (c2 < c || a2 > a))
        })
        .cloned()
        .collect();
    front.sort_by(|x, y| x.1.total_cmp(&y.1));
    front
}

const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/Library/Fonts/Arial.ttf",
];

/// Label line height in pixels.
const LINE: i32 = 15;

/// Text needs a TrueType font; use `R2REASONER_FONT` or a common system one.
fn register_font() -> Result<(), String> {
    static DONE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let candidates = std::env::var("R2REASONER_FONT").into_iter().chain(FONT_PATHS.iter().map(|s| s.to_string()));
        for path in candidates {
            if let Ok(bytes) = std::fs::read(&path) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                return plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).map_err(|_| format!("{path} is not a usable TrueType font"));
            }
        }
        Err("no TrueType font found for plot labels (install fonts-dejavu-core or set R2REASONER_FONT)".into())
    })
    .clone()
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    points: &[Point],
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let e = |err: DrawingAreaErrorKind<DB::ErrorType>| err.to_string();
    root.fill(&WHITE).map_err(e)?;
    let positive: Vec<f64> = points.iter().map(|p| p.1).filter(|c| *c > 0.0).collect();
    let lo = positive.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = positive.iter().copied().fold(0.0, f64::max);
    let (lo, hi) = if lo.is_finite() && hi > 0.0 {
        // Room on the right for the labels of the dearest policies.
        (lo / 3.0, hi * 12.0)
    } else {
        (1e-7, 1e-3)
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d((lo..hi).log_scale(), 0.0..1.0f64)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("cost per item (USD, log scale)")
        .y_desc("accuracy")
        .x_label_formatter(&|x| format!("{x:.1e}"))
        .y_label_formatter(&|y| format!("{:.0}%", y * 100.0))
        .draw()
        .map_err(e)?;
    // Free policies (cost 0) sit on the left edge of the log axis.
    let place = |c: f64| if c > 0.0 { c } else { lo };
    let front = pareto(points);
    chart
        .draw_series(LineSeries::new(
            front.iter().map(|p| (place(p.1), p.2)),
            ShapeStyle::from(&RGBColor(200, 60, 60)).stroke_width(2),
        ))
        .map_err(e)?
        .label("Pareto frontier")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], RGBColor(200, 60, 60)));
    // Each label sits right of its point; a label that would overlap one already placed
    // moves to the nearest free line, below or above, so policies with (nearly) the same
    // cost and accuracy stay legible, and a thin line ties a moved label to its point.
    // Labels that would run off the right edge go left of their point instead.
    let right_edge = chart.plotting_area().get_pixel_range().0.end;
    let mut placed: Vec<(i32, i32, i32)> = Vec::new(); // left, top, width in pixels
    for (label, cost, acc) in points {
        let pos = (place(*cost), *acc);
        let (px, py) = chart.backend_coord(&pos);
        let width = 7 * label.chars().count() as i32;
        let dx = if px + 8 + width > right_edge {
            -8 - width
        } else {
            8
        };
        let left = px + dx;
        let free = |dy: i32| {
            !placed
                .iter()
                .any(|&(l, t, w)| left < l + w && l < left + width && (py + dy - t).abs() < LINE)
        };
        // -7 centres the text on the point; then one line down, one up, two down, ...
        let dy = (0..)
            .map(|k: i32| -7 + LINE * if k % 2 == 1 { (k + 1) / 2 } else { -k / 2 })
            .find(|&dy| free(dy))
            .unwrap_or(-7);
        placed.push((left, py + dy, width));
        // A moved label is tied to its point, from the label's near edge.
        let near = if dx > 0 { dx - 2 } else { -6 };
        let leader = if dy == -7 {
            vec![(0, 0)]
        } else {
            vec![(0, 0), (near, dy + 7)]
        };
        chart
            .draw_series(std::iter::once(
                EmptyElement::at(pos)
                    + PathElement::new(leader, BLACK.mix(0.35))
                    + Circle::new((0, 0), 5, BLUE.filled())
                    + Text::new(
                        label.clone(),
                        (dx, dy),
                        ("sans-serif", 13).into_font().color(&BLACK),
                    ),
            ))
            .map_err(e)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

/// Write `stem.png` and `stem.svg` in `dir`.
pub fn cost_accuracy(dir: &Path, stem: &str, title: &str, points: &[Point]) -> Result<(), String> {
    register_font()?;
    let png = dir.join(format!("{stem}.png"));
    let svg = dir.join(format!("{stem}.svg"));
    draw(
        BitMapBackend::new(&png, (960, 640)).into_drawing_area(),
        title,
        points,
    )?;
    draw(
        SVGBackend::new(&svg, (960, 640)).into_drawing_area(),
        title,
        points,
    )?;
    Ok(())
}

/// One named line of a training curve: (x, y) points.
pub type Series = (String, Vec<(f64, f64)>);

fn draw_curves<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    x_desc: &str,
    series: &[Series],
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let e = |err: DrawingAreaErrorKind<DB::ErrorType>| err.to_string();
    root.fill(&WHITE).map_err(e)?;
    let xs = series.iter().flat_map(|s| s.1.iter().map(|p| p.0));
    let ys: Vec<f64> = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .filter(|y| y.is_finite())
        .collect();
    let x_hi = xs.fold(1.0, f64::max);
    let y_lo = ys.iter().copied().fold(0.0, f64::min);
    let y_hi = ys.iter().copied().fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..x_hi, y_lo..y_hi * 1.05)
        .map_err(e)?;
    chart.configure_mesh().x_desc(x_desc).draw().map_err(e)?;
    for (i, (name, points)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let style = ShapeStyle::from(&color).stroke_width(2);
        chart
            .draw_series(LineSeries::new(points.iter().copied(), style))
            .map_err(e)?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
        // A marker per point, so a series of one point still shows.
        chart
            .draw_series(
                points
                    .iter()
                    .map(|&p| Circle::new(p, 3, ShapeStyle::from(&color).filled())),
            )
            .map_err(e)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

/// Line curves (e.g. training reward, accuracy and cost per iteration) as a PNG at `path`.
pub fn curves(path: &Path, title: &str, x_desc: &str, series: &[Series]) -> Result<(), String> {
    register_font()?;
    draw_curves(
        BitMapBackend::new(path, (960, 640)).into_drawing_area(),
        title,
        x_desc,
        series,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pareto_keeps_only_undominated_points() {
        let p = |l: &str, c: f64, a: f64| (l.to_string(), c, a);
        let points = vec![
            p("cheap", 1.0, 0.2),
            p("mid", 2.0, 0.5),
            p("dominated", 3.0, 0.4),
            p("best", 4.0, 0.6),
            p("tie", 2.0, 0.5),
        ];
        let labels: Vec<String> = pareto(&points).into_iter().map(|x| x.0).collect();
        assert_eq!(labels, ["cheap", "mid", "tie", "best"]);
    }

    #[test]
    fn plots_are_written() {
        // scripts/setup installs fonts-dejavu-core, so a font is always there in the test suite.
        let dir = tempfile::tempdir().unwrap();
        let points = vec![
            ("direct:big".to_string(), 1e-4, 0.5),
            ("fixed:small".to_string(), 1e-6, 0.2),
            ("free".to_string(), 0.0, 0.1),
        ];
        cost_accuracy(dir.path(), "plot", "test", &points).unwrap();
        let png = std::fs::read(dir.path().join("plot.png")).unwrap();
        assert_eq!(&png[..4], b"\x89PNG");
        let svg = std::fs::read_to_string(dir.path().join("plot.svg")).unwrap();
        assert!(svg.contains("<svg") && svg.contains("direct:big"));
    }

    #[test]
    fn curves_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curves.png");
        let series = vec![(
            "reward".to_string(),
            vec![(1.0, 0.2), (2.0, 0.4), (3.0, 0.5)],
        )];
        curves(&path, "training", "iteration", &series).unwrap();
        assert_eq!(&std::fs::read(&path).unwrap()[..4], b"\x89PNG");
    }
}
