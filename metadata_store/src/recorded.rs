//! The record lifecycle every run shares (a materialization, a skew check):
//! a `running` record when it starts, one final record when it ends, written
//! here once so the two cannot drift apart.

use chrono::{DateTime, SecondsFormat, Utc};

use crate::{MetadataStore, RunRecord, RunStatus, StoreError};

/// A time as run records hold it: RFC 3339, UTC, microseconds.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A run whose start is recorded; [`Recorded::finish`] appends its end.
#[must_use = "a started run must be finished, or its record stays `running`"]
pub struct Recorded<'s> {
    store: &'s MetadataStore,
    record: RunRecord,
}

impl MetadataStore {
    /// Appends the start of a run: `record` as `running`, with its attempt
    /// number (see [`MetadataStore::next_attempt`]).
    pub fn start(&self, mut record: RunRecord) -> Result<Recorded<'_>, StoreError> {
        record.status = RunStatus::Running;
        record.attempt = self.next_attempt(&record.service, record.kind)?;
        self.append(&record)?;
        Ok(Recorded { store: self, record })
    }
}

impl Recorded<'_> {
    /// Appends the run's final record, ended now. A failed run is recorded as
    /// `failed` with its error's text; `fill` then sets what the outcome adds
    /// (the status of a success, counts, the generation).
    pub fn finish<T, E: std::fmt::Display>(
        mut self,
        result: &Result<T, E>,
        fill: impl FnOnce(&mut RunRecord, Result<&T, &E>),
    ) -> Result<(), StoreError> {
        let r = &mut self.record;
        r.ended_at = Some(timestamp(Utc::now()));
        if let Err(e) = result {
            r.status = RunStatus::Failed;
            r.error = Some(e.to_string());
        }
        fill(r, result.as_ref());
        self.store.append(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RunKind;

    fn started<'s>(store: &'s MetadataStore, run: &str) -> Recorded<'s> {
        let r = RunRecord { run_id: run.into(), kind: RunKind::SkewCheck, service: "s".into(), ..Default::default() };
        store.start(r).unwrap()
    }

    #[test]
    fn a_run_is_recorded_running_then_ended_and_a_failure_counts_toward_the_next_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetadataStore::open(dir.path()).unwrap();
        let failed: Result<(), String> = Err("redis went away".into());
        started(&store, "r1").finish(&failed, |r, _| r.generation = Some("g1".into())).unwrap();
        let r1 = store.show("r1").unwrap();
        assert_eq!(r1.iter().map(|r| r.status).collect::<Vec<_>>(), [RunStatus::Running, RunStatus::Failed]);
        assert_eq!(r1[1].error.as_deref(), Some("redis went away"));
        assert_eq!(r1[1].generation.as_deref(), Some("g1"), "fill runs after the failure is set");
        assert!(r1[1].ended_at.is_some() && r1[0].ended_at.is_none());

        let passed: Result<u32, String> = Ok(7);
        started(&store, "r2")
            .finish(&passed, |r, o| r.status = if o == Ok(&7) { RunStatus::Passed } else { RunStatus::Failed })
            .unwrap();
        let r2 = store.show("r2").unwrap();
        assert_eq!(r2[0].attempt, 2, "one failure since the last success");
        assert_eq!((r2[1].status, r2[1].error.as_deref()), (RunStatus::Passed, None));
    }
}
