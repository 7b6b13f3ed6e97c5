//! The time spans of a SQLite stream's raw events: what retention needs instead of a time index.
//!
//! An index on the event time cost every appended row a second B-tree insert, and retention was
//! its only reader (views, analyses and query SQL read raw events by `_seq`). Here the events are
//! cut into spans of [`SPAN_ROWS`] sequence numbers, and `tally_spans__{stream}` holds one row
//! per span, `(span, lo, hi)`: `span` is `_seq >> SPAN_SHIFT`, and every raw event of the span
//! has its event time in `[lo, hi]`. An append widens the spans of its events (one upsert per
//! span it touches, so about one a commit); a delete may leave a span wider than its events,
//! which is safe. Retention visits only the spans with `lo` before its cutoff, deletes by `_seq`
//! range there, and narrows (or removes) what it visited. Events arrive nearly in time order,
//! so a span is narrow and retention touches few events it keeps.
//!
//! A stream of the earlier layout (a row table with a time index, no span table) gets its spans
//! from its rows, and loses the index, when tenant migration 9 converts its rows into blocks
//! ([`crate::sqlite_events::convert`]).

use rusqlite::{Transaction, params};
use tally_views::{StreamDef, Timestamp, Value};

use crate::error::Result;
use crate::sqlite::ident;

/// `_seq >> SPAN_SHIFT` is a row's span.
pub(crate) const SPAN_SHIFT: u32 = 12;

/// Sequence numbers per span.
pub(crate) const SPAN_ROWS: i64 = 1 << SPAN_SHIFT;

fn spans(stream: &str) -> String {
    ident(&format!("tally_spans__{stream}"))
}

/// Creates the span table of a new stream (dropping any left from an earlier definition).
pub(crate) fn create(tx: &Transaction<'_>, stream: &str) -> Result<()> {
    let table = spans(stream);
    tx.execute_batch(&format!(
        "DROP TABLE IF EXISTS {table};
         CREATE TABLE {table} (span INTEGER PRIMARY KEY, lo INTEGER NOT NULL, hi INTEGER NOT NULL);"
    ))?;
    Ok(())
}

/// Creates the span table of a stream if it has none (keeping the spans of one that has).
pub(crate) fn create_if_missing(tx: &Transaction<'_>, stream: &str) -> Result<()> {
    tx.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {} (span INTEGER PRIMARY KEY, lo INTEGER NOT NULL, hi INTEGER NOT NULL)",
        spans(stream)
    ))?;
    Ok(())
}

/// Drops the span table of a stream.
pub(crate) fn drop(tx: &Transaction<'_>, stream: &str) -> Result<()> {
    tx.execute_batch(&format!("DROP TABLE IF EXISTS {}", spans(stream)))?;
    Ok(())
}

/// Converts a stream of the earlier layout (a row table), if it is one: spans from its rows, the
/// time index dropped. A no-op (one lookup in `sqlite_master`) for a stream that has its span
/// table.
pub(crate) fn ensure(tx: &Transaction<'_>, stream: &StreamDef) -> Result<()> {
    if crate::sqlite::table_exists(tx, &format!("tally_spans__{}", stream.name))? {
        return Ok(());
    }
    create(tx, &stream.name)?;
    tx.execute_batch(&format!(
        "INSERT INTO {} (span, lo, hi) SELECT \"_seq\" >> {SPAN_SHIFT}, min({time}), max({time}) \
           FROM {raw} GROUP BY 1;
         DROP INDEX IF EXISTS {index};",
        spans(&stream.name),
        time = ident(&stream.columns[stream.event_time].name),
        raw = ident(&stream.name),
        index = ident(&format!("{}__time", stream.name)),
    ))?;
    Ok(())
}

/// The spans of the rows one append inserts, gathered as the rows are numbered (in `_seq`
/// order, so a span's rows are consecutive).
#[derive(Default)]
pub(crate) struct NewSpans(Vec<(i64, i64, i64)>);

impl NewSpans {
    /// Notes the row `seq` with the event time `time`. A row whose time is not a timestamp (the
    /// decoder never makes one) is never before any cutoff, so it needs no span.
    pub(crate) fn add(&mut self, seq: i64, time: &Value) {
        let Value::Timestamp(Timestamp(t)) = *time else {
            return;
        };
        let span = seq >> SPAN_SHIFT;
        match self.0.last_mut() {
            Some((s, lo, hi)) if *s == span => {
                *lo = (*lo).min(t);
                *hi = (*hi).max(t);
            }
            _ => self.0.push((span, t, t)),
        }
    }

    /// Widens the stored spans to hold the noted rows.
    pub(crate) fn write(self, tx: &Transaction<'_>, stream: &str) -> Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        let mut stmt = tx.prepare_cached(&format!(
            "INSERT INTO {} (span, lo, hi) VALUES (?, ?, ?) ON CONFLICT (span) DO UPDATE \
             SET lo = min(lo, excluded.lo), hi = max(hi, excluded.hi)",
            spans(stream)
        ))?;
        for (span, lo, hi) in self.0 {
            stmt.execute(params![span, lo, hi])?;
        }
        Ok(())
    }
}

/// The `_seq` ranges, one per span, that may hold rows with an event time before `before` and a
/// sequence number up to `max_seq`: `(span, first, last)`, in order.
pub(crate) fn before(
    tx: &Transaction<'_>,
    stream: &str,
    before: Timestamp,
    max_seq: u64,
) -> Result<Vec<(i64, i64, i64)>> {
    let max_seq = i64::try_from(max_seq).unwrap_or(i64::MAX);
    let mut stmt = tx.prepare_cached(&format!(
        "SELECT span FROM {} WHERE lo < ? AND span <= ? ORDER BY span",
        spans(stream)
    ))?;
    let rows = stmt.query_map(params![before.0, max_seq >> SPAN_SHIFT], |r| {
        r.get::<_, i64>(0)
    })?;
    let mut out = Vec::new();
    for span in rows {
        let span = span?;
        let first = span << SPAN_SHIFT;
        out.push((span, first, (first + SPAN_ROWS - 1).min(max_seq)));
    }
    Ok(out)
}

/// Sets a span to the times of the rows left in it (`left`: their lowest and highest), or
/// removes it when none are, after a delete in its range.
pub(crate) fn narrow(
    tx: &Transaction<'_>,
    stream: &str,
    span: i64,
    left: Option<(i64, i64)>,
) -> Result<()> {
    let table = spans(stream);
    match left {
        Some((lo, hi)) => tx
            .prepare_cached(&format!("UPDATE {table} SET lo = ?, hi = ? WHERE span = ?"))?
            .execute(params![lo, hi, span])?,
        None => tx
            .prepare_cached(&format!("DELETE FROM {table} WHERE span = ?"))?
            .execute([span])?,
    };
    Ok(())
}
