//! Progress of the long commands (rewrap, verify, migrate, bench): a bar on
//! stderr, hidden when stderr is not a terminal.

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub(crate) struct Bar(pub indicatif::ProgressBar);

impl Bar {
    pub(crate) fn new(what: &str) -> Self {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:>10} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})",
            )
            .expect("template")
            .progress_chars("=> "),
        );
        b.set_message(what.to_string());
        Bar(b)
    }
}

impl crate::rewrap::Progress for Bar {
    fn total(&self, n: u64) {
        self.0.set_length(n);
    }
    fn tick(&self) {
        self.0.inc(1);
    }
}
