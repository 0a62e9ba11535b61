//! A progress bar on a terminal; silence otherwise (cron, Dagster, `--json`).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

pub struct Bar(ProgressBar);

impl Bar {
    /// A spinner counting rows for `label`, or a hidden one.
    pub fn rows(label: &str, quiet: bool) -> Bar {
        if quiet || !std::io::stderr().is_terminal() {
            return Bar(ProgressBar::hidden());
        }
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix}: {human_pos} rows ({per_sec}) {elapsed}")
                .expect("valid template"),
        );
        bar.set_prefix(label.to_string());
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        Bar(bar)
    }

    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}

impl daeda_materializer::Progress for Bar {
    fn rows_done(&self, n: u64) {
        self.0.inc(n);
    }
}
