//! The table every run ends with: one line per scenario and build, with the figure that
//! `docs/performance.md` quotes. With several builds (`--plugd A --plugd B`) and rounds, each line
//! gives the median of its rounds, every round's figure (the noise of the machine), and the ratio to
//! the first build's median.

/// One measured figure of one round of one scenario on one build.
struct Row {
    scenario: String,
    build: String,
    figure: f64,
    unit: &'static str,
    /// Whether a larger figure is better (throughput) or worse (latency, time).
    higher_is_better: bool,
    detail: String,
}

/// The figures of a run, in the order they were measured.
#[derive(Default)]
pub(crate) struct Summary {
    rows: Vec<Row>,
    build: String,
}

impl Summary {
    /// Names the build that the figures added next belong to.
    pub(crate) fn set_build(&mut self, build: &str) {
        self.build = build.to_owned();
    }

    /// A throughput-like figure: higher is better.
    pub(crate) fn rate(&mut self, scenario: &str, figure: f64, unit: &'static str, detail: String) {
        self.push(scenario, figure, unit, true, detail);
    }

    /// A time-like figure: lower is better.
    pub(crate) fn time(&mut self, scenario: &str, figure: f64, unit: &'static str, detail: String) {
        self.push(scenario, figure, unit, false, detail);
    }

    fn push(&mut self, scenario: &str, figure: f64, unit: &'static str, higher_is_better: bool, detail: String) {
        let (scenario, build) = (scenario.to_owned(), self.build.clone());
        self.rows.push(Row { scenario, build, figure, unit, higher_is_better, detail });
    }

    /// Prints the table.
    pub(crate) fn print(&self) {
        let mut scenarios: Vec<&str> = Vec::new();
        let mut builds: Vec<&str> = Vec::new();
        for row in &self.rows {
            if !scenarios.contains(&row.scenario.as_str()) {
                scenarios.push(&row.scenario);
            }
            if !builds.contains(&row.build.as_str()) {
                builds.push(&row.build);
            }
        }
        println!("\nSummary (median of rounds; every round in brackets; ratio to {}):", builds.first().unwrap_or(&"-"));
        let width = scenarios.iter().map(|s| s.len()).max().unwrap_or(0);
        let build_width = builds.iter().map(|b| b.len()).max().unwrap_or(0);
        for scenario in &scenarios {
            let mut first: Option<f64> = None;
            for build in &builds {
                let mut rows: Vec<&Row> =
                    self.rows.iter().filter(|r| r.scenario == *scenario && r.build == *build).collect();
                if rows.is_empty() {
                    continue;
                }
                let rounds: Vec<String> = rows.iter().map(|r| shown(r.figure)).collect();
                rows.sort_by(|a, b| a.figure.total_cmp(&b.figure));
                let median = rows[rows.len() / 2];
                let ratio = match first {
                    None => {
                        first = Some(median.figure);
                        String::new()
                    }
                    Some(base) if base > 0.0 => format!("  x{:.2}", median.figure / base),
                    Some(_) => String::new(),
                };
                let better = if median.higher_is_better { "higher is better" } else { "lower is better" };
                println!(
                    "  {scenario:<width$}  {build:<build_width$}  {:>9} {:<12} [{}]{ratio}  {}  ({better})",
                    shown(median.figure),
                    median.unit,
                    rounds.join(", "),
                    median.detail,
                );
            }
        }
    }
}

/// A figure with the precision that matters at its size.
fn shown(figure: f64) -> String {
    if figure.abs() >= 100.0 {
        format!("{figure:.0}")
    } else {
        format!("{figure:.2}")
    }
}
