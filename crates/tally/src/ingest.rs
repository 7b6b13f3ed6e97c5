//! Bulk ingest of a file: NDJSON, CSV or a JSON array, in durable batches.
//!
//! Records are decoded and validated one by one ([`crate::decode`]); valid rows are committed in
//! batches of [`Config::batch_rows`] (the durable acknowledgement), applied to the views, and the views
//! flushed at the end. A bad record is reported with its line and reason and the rest of the file
//! is kept. Lines are read with a bound, so a gigantic line costs neither memory nor a panic.

use std::io::BufRead;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};

use serde::Serialize;
use serde_json::value::RawValue;
use tally_store::KeyHashes;
use tally_views::{Event, StreamDef, Value};

use crate::app::{BATCH_ROWS, Config};
use crate::decode::{MAX_EVENT_BYTES, RowDecoder, json_error};
use crate::error::{Error, Result};
use crate::runtime::{Appended, ApplySide, FlushJob, TenantRuntime};

/// How many rejected records a report lists.
pub const MAX_REPORTED_ERRORS: usize = 100;

/// An input format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Ndjson,
    Csv,
    Json,
}

impl Format {
    /// The format a file name suggests: `.csv`, `.json`, else NDJSON.
    pub fn from_path(path: &std::path::Path) -> Format {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("csv") => Format::Csv,
            Some("json") => Format::Json,
            _ => Format::Ndjson,
        }
    }
}

/// A rejected record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RowError {
    pub line: u64,
    pub error: String,
}

/// What an ingest did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct IngestReport {
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: u64,
    /// The first [`MAX_REPORTED_ERRORS`] rejections.
    pub errors: Vec<RowError>,
}

impl IngestReport {
    fn reject(&mut self, line: u64, error: String) {
        self.rejected += 1;
        if self.errors.len() < MAX_REPORTED_ERRORS {
            self.errors.push(RowError { line, error });
        }
    }
}

/// Decoded records on their way from the decoding thread to the committing one.
struct Batch {
    rows: Vec<Vec<Value>>,
    /// The rows' dedupe keys and their hashes, when the store uses them: computed here, off the
    /// committing thread, which is the busier of the two.
    hashed: Option<KeyHashes>,
    rejected: Vec<(u64, String)>,
    /// Input bytes consumed so far, for progress.
    bytes: u64,
}

/// Work for the committing thread.
enum Work {
    Batch(Batch),
    Flush(FlushJob),
    Failed(Error),
}

/// The decoding thread's side: collects records into batches, hands them over for committing,
/// and applies what comes back committed.
struct Handoff<'r> {
    work: SyncSender<Work>,
    committed: Receiver<Vec<Event>>,
    apply: ApplySide<'r>,
    stream: &'r StreamDef,
    /// Whether batches carry their keys' hashes ([`Batch::hashed`]).
    hash_keys: bool,
    batch: Batch,
    batch_rows: usize,
    /// Batches handed over whose committed events have not come back yet.
    pending: usize,
}

impl Handoff<'_> {
    /// Adds a decoded record; `false` once the committing side has stopped.
    fn push(
        &mut self,
        line: u64,
        row: std::result::Result<Vec<Value>, String>,
        bytes: u64,
    ) -> bool {
        match row {
            Ok(row) => self.batch.rows.push(row),
            Err(reason) => self.batch.rejected.push((line, reason)),
        }
        self.batch.bytes = bytes;
        if self.batch.rows.len() + self.batch.rejected.len() >= self.batch_rows {
            return self.send();
        }
        true
    }

    fn send(&mut self) -> bool {
        let bytes = self.batch.bytes;
        let mut full = std::mem::replace(
            &mut self.batch,
            Batch {
                rows: Vec::with_capacity(self.batch_rows.min(BATCH_ROWS)),
                hashed: None,
                rejected: Vec::new(),
                bytes,
            },
        );
        if self.hash_keys && !full.rows.is_empty() {
            full.hashed = Some(KeyHashes::new(self.stream, &full.rows));
        }
        if self.work.send(Work::Batch(full)).is_err() {
            return false;
        }
        self.pending += 1;
        self.apply_committed(false)
    }

    /// Applies batches that came back committed; with `wait`, until none is pending.
    fn apply_committed(&mut self, wait: bool) -> bool {
        while self.pending > 0 {
            let events = if wait {
                match self.committed.recv() {
                    Ok(events) => events,
                    Err(_) => return false,
                }
            } else {
                match self.committed.try_recv() {
                    Ok(events) => events,
                    Err(TryRecvError::Empty) => return true,
                    Err(TryRecvError::Disconnected) => return false,
                }
            };
            self.pending -= 1;
            self.apply.apply(&self.stream.name, &events);
            if self.apply.needs_flush()
                && self
                    .work
                    .send(Work::Flush(self.apply.take_flush()))
                    .is_err()
            {
                return false;
            }
        }
        true
    }

    /// Hands over the last batch, applies everything, and asks for the final flush.
    fn finish(mut self) {
        if self.send() && self.apply_committed(true) {
            let _ = self.work.send(Work::Flush(self.apply.take_flush()));
        }
    }
}

/// Ingests `input` into `stream` of the tenant. `progress` is told the bytes read so far.
///
/// Two threads share the work: one reads and decodes records (checking them against the views),
/// hashes each batch's dedupe keys when the store indexes them so ([`KeyHashes`]), and applies
/// committed events to the views; the other commits each batch to the store (the durable
/// acknowledgement) and writes flushes. A channel of two batches between them bounds
/// memory. Rejections keep their input order.
pub fn ingest(
    runtime: &mut TenantRuntime,
    stream: &StreamDef,
    config: &Config,
    format: Format,
    input: impl BufRead + Send,
    progress: &dyn Fn(u64),
) -> Result<IngestReport> {
    let batch_rows = config.batch_rows.max(1);
    let (work_tx, work_rx) = std::sync::mpsc::sync_channel::<Work>(2);
    let (committed_tx, committed_rx) = std::sync::mpsc::channel::<Vec<Event>>();
    let report = {
        let (mut store, apply) = runtime.split();
        let hash_keys = store.hashes_keys(stream);
        std::thread::scope(|scope| {
            scope.spawn(move || {
                let mut decoder = RowDecoder::new(stream, config.clock.now(), config.max_future);
                let mut handoff = Handoff {
                    work: work_tx,
                    committed: committed_rx,
                    apply,
                    stream,
                    hash_keys,
                    batch: Batch {
                        rows: Vec::with_capacity(batch_rows.min(BATCH_ROWS)),
                        hashed: None,
                        rejected: Vec::new(),
                        bytes: 0,
                    },
                    batch_rows,
                    pending: 0,
                };
                match decode(format, input, &mut decoder, config, &mut handoff) {
                    Ok(()) => handoff.finish(),
                    Err(e) => {
                        let _ = handoff.work.send(Work::Failed(e));
                    }
                }
            });
            let mut report = IngestReport::default();
            let mut outcome = Ok(());
            for work in work_rx {
                let step = match work {
                    Work::Batch(batch) => {
                        for (line, reason) in batch.rejected {
                            report.reject(line, reason);
                        }
                        // Every batch comes back, even one of rejections only: the decoding
                        // thread counts them.
                        let appended = if batch.rows.is_empty() {
                            Ok(Appended {
                                seqs: Vec::new(),
                                events: Vec::new(),
                            })
                        } else {
                            store.append_hashed(stream, batch.rows, batch.hashed)
                        };
                        appended.map(|Appended { seqs, events }| {
                            for seq in &seqs {
                                if seq.is_some() {
                                    report.accepted += 1;
                                } else {
                                    report.duplicates += 1;
                                }
                            }
                            let _ = committed_tx.send(events);
                            progress(batch.bytes);
                        })
                    }
                    Work::Flush(job) => store.write(job),
                    Work::Failed(e) => Err(e),
                };
                if step.is_err() {
                    outcome = step;
                    break;
                }
            }
            // Closing the channel stops the decoding thread if it still waits for a batch.
            drop(committed_tx);
            outcome.map(|()| report)
        })?
    };
    runtime_finish(runtime, config)?;
    Ok(report)
}

/// Reads and decodes every record of the input, handing them over; stops early when the
/// committing side has.
fn decode(
    format: Format,
    mut input: impl BufRead,
    decoder: &mut RowDecoder<'_>,
    config: &Config,
    out: &mut Handoff<'_>,
) -> Result<()> {
    let read_error = |e: std::io::Error| Error::Input {
        path: "the input".into(),
        source: e,
    };
    match format {
        Format::Ndjson => {
            let mut buf = Vec::new();
            let mut line_no = 0u64;
            let mut consumed = 0u64;
            while let Some(line) =
                read_line_bounded(&mut input, &mut buf, MAX_EVENT_BYTES).map_err(read_error)?
            {
                line_no += 1;
                consumed += line.bytes as u64;
                if line_no.is_multiple_of(1024) {
                    decoder.set_now(config.clock.now());
                }
                let row = if line.too_long {
                    Err(format!("the line is longer than {MAX_EVENT_BYTES} bytes"))
                } else {
                    match std::str::from_utf8(&buf) {
                        Err(_) => Err("the line is not valid UTF-8".into()),
                        Ok(text) if text.trim().is_empty() => continue,
                        Ok(text) => decoder.json(text.trim()).map_err(|r| r.message),
                    }
                };
                if !out.push(line_no, row, consumed) {
                    return Ok(());
                }
            }
        }
        Format::Csv => {
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(true)
                .flexible(true)
                .from_reader(input);
            let header = reader
                .byte_headers()
                .map_err(|e| Error::Invalid(format!("cannot read the CSV header: {e}")))?;
            let header: Vec<String> = header
                .iter()
                .map(|h| String::from_utf8_lossy(h).into_owned())
                .collect();
            let names: Vec<&str> = header.iter().map(String::as_str).collect();
            let columns = decoder.csv_header(&names).map_err(Error::Invalid)?;
            let mut record = csv::ByteRecord::new();
            let mut n = 0u64;
            loop {
                let row = match reader.read_byte_record(&mut record) {
                    Ok(false) => break,
                    Ok(true) => {
                        n += 1;
                        if n.is_multiple_of(1024) {
                            decoder.set_now(config.clock.now());
                        }
                        let fields: std::result::Result<Vec<&str>, _> =
                            record.iter().map(std::str::from_utf8).collect();
                        match fields {
                            Ok(fields) => decoder.csv(&columns, &fields).map_err(|r| r.message),
                            Err(_) => Err("the record is not valid UTF-8".into()),
                        }
                    }
                    Err(e) => {
                        if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                            let line = e.position().map_or(0, |p| p.line());
                            return Err(Error::Invalid(format!(
                                "cannot read the CSV input at line {line}: {e}"
                            )));
                        }
                        Err(format!("invalid CSV: {e}"))
                    }
                };
                let position = record.position().map_or((0, 0), |p| (p.line(), p.byte()));
                if !out.push(position.0, row, position.1) {
                    return Ok(());
                }
            }
            out.batch.bytes = reader.position().byte();
        }
        Format::Json => {
            let mut text = String::new();
            input
                .read_to_string(&mut text)
                .map_err(|e| Error::Invalid(format!("the input is not UTF-8 text: {e}")))?;
            let elements: Vec<&RawValue> = serde_json::from_str(&text).map_err(|e| {
                Error::Invalid(format!(
                    "the input is not a JSON array of events: {} (at line {} column {})",
                    json_error(&e, &text),
                    e.line(),
                    e.column()
                ))
            })?;
            let mut line = 1u64;
            let mut scanned = 0usize;
            for element in elements {
                let offset = element.get().as_ptr() as usize - text.as_ptr() as usize;
                line += text.as_bytes()[scanned..offset]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count() as u64;
                scanned = offset;
                let row = decoder.json(element.get()).map_err(|r| r.message);
                if !out.push(line, row, offset as u64) {
                    return Ok(());
                }
            }
            out.batch.bytes = text.len() as u64;
        }
    }
    Ok(())
}

fn runtime_finish(runtime: &mut TenantRuntime, config: &Config) -> Result<()> {
    runtime.flush()?;
    runtime.enforce_retention(config.clock.now())?;
    Ok(())
}

/// A line read by [`read_line_bounded`].
struct Line {
    /// Bytes consumed from the input, the newline included.
    bytes: usize,
    /// The line was longer than the limit; `buf` holds only its start.
    too_long: bool,
}

/// Reads one line into `buf` (without the newline), keeping at most `limit + 1` bytes of it.
/// Returns `None` at the end of the input.
fn read_line_bounded(
    input: &mut impl BufRead,
    buf: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<Option<Line>> {
    buf.clear();
    let mut bytes = 0;
    let mut too_long = false;
    loop {
        let available = match input.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(if bytes == 0 {
                None
            } else {
                Some(Line { bytes, too_long })
            });
        }
        let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], Some(i + 1)),
            None => (available, None),
        };
        if !too_long {
            let room = (limit + 1).saturating_sub(buf.len());
            buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
            too_long = buf.len() > limit;
        }
        let used = done.unwrap_or(available.len());
        input.consume(used);
        bytes += used;
        if done.is_some() {
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            return Ok(Some(Line { bytes, too_long }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_lines() {
        let text = format!("a\nbb\r\n{}\nlast", "x".repeat(100));
        let mut input = std::io::BufReader::with_capacity(7, text.as_bytes());
        let mut buf = Vec::new();
        let mut lines = Vec::new();
        while let Some(line) = read_line_bounded(&mut input, &mut buf, 10).unwrap() {
            lines.push((String::from_utf8(buf.clone()).unwrap(), line.too_long));
        }
        assert_eq!(lines[0], ("a".into(), false));
        assert_eq!(lines[1], ("bb".into(), false));
        assert!(lines[2].1, "the long line is flagged");
        assert_eq!(lines[2].0.len(), 11);
        assert_eq!(lines[3], ("last".into(), false));
    }
}
