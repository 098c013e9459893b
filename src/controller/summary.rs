//! The log of a finished pass: one summary line, then its errors, an error
//! the passes keep meeting logged once and then at most once a minute
//! ([`super::repeats`]). Apart from the pass because a pass only returns
//! its report: its caller (the service's interval loop) logs it.

use std::collections::BTreeMap;
use std::time::Instant;

use super::repeats::Repeats;
use crate::report::PassReport;

/// Logs a pass's summary line and its errors; an error the passes keep
/// meeting (a database outage) is logged once, then at most once a minute
/// with a count (see [`super::repeats`]).
pub fn log_summary(r: &PassReport, repeats: &mut Repeats) {
    let counts = r
        .results
        .iter()
        .fold(BTreeMap::<&str, usize>::new(), |mut m, x| {
            *m.entry(x.outcome.name()).or_default() += 1;
            m
        });
    tracing::info!(
        trigger = %r.trigger,
        duration_ms = r.duration_ms,
        actions = r.results.len(),
        outcomes = ?counts,
        at_risk = r.at_risk.len(),
        pending = r.pending.len(),
        result = %r.result(),
        errors = r.error_count(),
        left_for_next_pass = r.left_for_next_pass().len(),
        unreadable_processes = r.observed.unreadable_processes,
        "pass finished"
    );
    let now = Instant::now();
    for e in &r.errors {
        if let Some(line) = repeats.note(e, now) {
            tracing::error!("{line}");
        }
    }
    repeats.keep_only(r.errors.iter().map(String::as_str));
}
