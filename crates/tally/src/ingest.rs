//! Bulk ingest of a file: NDJSON, CSV or a JSON array, in durable batches.
//!
//! Records are decoded and validated one by one ([`crate::decode`]); valid rows are committed in
//! batches of [`BATCH_ROWS`] (the durable acknowledgement), applied to the views, and the views
//! flushed at the end. A bad record is reported with its line and reason and the rest of the file
//! is kept. Lines are read with a bound, so a gigantic line costs neither memory nor a panic.

use std::io::BufRead;

use serde::Serialize;
use serde_json::value::RawValue;
use tally_views::StreamDef;

use crate::app::Config;
use crate::decode::{MAX_EVENT_BYTES, RowDecoder, json_error};
use crate::error::{Error, Result};
use crate::runtime::TenantRuntime;

/// Rows per durable commit, by default.
pub const BATCH_ROWS: usize = 10_000;
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

/// Collects valid rows and commits them in batches.
struct Batcher<'r> {
    runtime: &'r mut TenantRuntime,
    batch_rows: usize,
    stream: &'r StreamDef,
    rows: Vec<Vec<tally_views::Value>>,
    report: IngestReport,
}

impl Batcher<'_> {
    fn push(
        &mut self,
        line: u64,
        row: std::result::Result<Vec<tally_views::Value>, String>,
    ) -> Result<()> {
        match row {
            Ok(row) => {
                self.rows.push(row);
                if self.rows.len() >= self.batch_rows {
                    self.commit()?;
                }
            }
            Err(reason) => self.report.reject(line, reason),
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let seqs = self.runtime.append(self.stream, &self.rows)?;
        for s in seqs {
            if s.is_some() {
                self.report.accepted += 1;
            } else {
                self.report.duplicates += 1;
            }
        }
        self.rows.clear();
        Ok(())
    }
}

/// Ingests `input` into `stream` of the tenant. `progress` is told the bytes read so far.
pub fn ingest(
    runtime: &mut TenantRuntime,
    stream: &StreamDef,
    config: &Config,
    format: Format,
    mut input: impl BufRead,
    progress: &dyn Fn(u64),
) -> Result<IngestReport> {
    // The engine is cloned so the decoder can check rows while the batcher appends them.
    let engine = runtime.engine().clone();
    let mut decoder = RowDecoder::new(stream, &engine, config.clock.now(), config.max_future);
    let batch_rows = config.batch_rows.max(1);
    let mut batcher = Batcher {
        runtime,
        batch_rows,
        stream,
        rows: Vec::with_capacity(batch_rows.min(BATCH_ROWS)),
        report: IngestReport::default(),
    };
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
                    progress(consumed);
                    decoder.set_now(config.clock.now());
                }
                if line.too_long {
                    batcher.report.reject(
                        line_no,
                        format!("the line is longer than {MAX_EVENT_BYTES} bytes"),
                    );
                    continue;
                }
                let Ok(text) = std::str::from_utf8(&buf) else {
                    batcher
                        .report
                        .reject(line_no, "the line is not valid UTF-8".into());
                    continue;
                };
                if text.trim().is_empty() {
                    continue;
                }
                batcher.push(line_no, decoder.json(text.trim()))?;
            }
            progress(consumed);
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
                match reader.read_byte_record(&mut record) {
                    Ok(false) => break,
                    Ok(true) => {}
                    Err(e) => {
                        let line = e.position().map_or(0, |p| p.line());
                        if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                            return Err(Error::Invalid(format!(
                                "cannot read the CSV input at line {line}: {e}"
                            )));
                        }
                        batcher.report.reject(line, format!("invalid CSV: {e}"));
                        continue;
                    }
                }
                let line = record.position().map_or(0, |p| p.line());
                n += 1;
                if n.is_multiple_of(1024) {
                    progress(record.position().map_or(0, |p| p.byte()));
                    decoder.set_now(config.clock.now());
                }
                let fields: std::result::Result<Vec<&str>, _> =
                    record.iter().map(std::str::from_utf8).collect();
                let row = match fields {
                    Ok(fields) => decoder.csv(&columns, &fields),
                    Err(_) => Err("the record is not valid UTF-8".into()),
                };
                batcher.push(line, row)?;
            }
            progress(reader.position().byte());
        }
        Format::Json => {
            let mut text = String::new();
            input
                .read_to_string(&mut text)
                .map_err(|e| Error::Invalid(format!("the input is not UTF-8 text: {e}")))?;
            progress(text.len() as u64);
            let elements: Vec<&RawValue> = serde_json::from_str(&text).map_err(|e| {
                Error::Invalid(format!(
                    "the input is not a JSON array of events: {} (at line {} column {})",
                    json_error(&e, &text),
                    e.line(),
                    e.column()
                ))
            })?;
            for element in elements {
                let offset = element.get().as_ptr() as usize - text.as_ptr() as usize;
                let line = 1 + text.as_bytes()[..offset]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count() as u64;
                batcher.push(line, decoder.json(element.get()))?;
            }
        }
    }
    batcher.commit()?;
    let report = std::mem::take(&mut batcher.report);
    runtime_finish(batcher.runtime, config)?;
    Ok(report)
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
