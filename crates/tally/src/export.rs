//! Exports (docs/exports.md): a view query's rows or a stream's raw events as CSV, NDJSON or
//! Parquet, written chunk by chunk so that a stream of any size is exported in constant memory,
//! and incremental: each export ends at a *cursor* (a position in the stream's log) and an
//! export `after` it holds only what changed since.
//!
//! - A stream export is the events with sequence numbers in `(after, head]`, `head` being the
//!   last committed event when the export began; the cursor is `head`.
//! - A view export after a cursor is the answer rows whose group a later event touched: the
//!   events after the cursor are read from the log and applied, alone, to an empty delta, which
//!   names the view groups they changed; each answer row is kept when its answer group is the
//!   answer group of one of those. The cursor is the log's head, read before the answer is
//!   computed, so the answer holds at least everything up to it (a row may come again in the
//!   next export; none is missed). Events after the cursor that are no longer in the log
//!   (retention, an erasure) make the cursor unusable: a full export is needed.

use std::collections::HashSet;
#[cfg(feature = "sql")]
use std::sync::{Arc, Mutex};

use tally_views::{QueryPlan, QueryRequest, ResultSet, StreamDef, Type, Value};

use crate::error::{Error, Result};
use crate::output::json_value;
use crate::runtime::TenantRuntime;

/// Events read from the log per round trip.
pub const BATCH: usize = 10_000;
/// Rows per Parquet row group: bounds what the writer holds in memory.
#[cfg(feature = "sql")]
const ROW_GROUP: usize = 65_536;

/// An export file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    Csv,
    Ndjson,
    Parquet,
}

impl ExportFormat {
    pub fn parse(text: &str) -> Result<ExportFormat> {
        match text {
            "csv" => Ok(ExportFormat::Csv),
            "ndjson" => Ok(ExportFormat::Ndjson),
            "parquet" => Ok(ExportFormat::Parquet),
            other => Err(Error::Request(format!(
                "format: '{other}' is not an export format; use csv, ndjson or parquet"
            ))),
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Csv => "text/csv; charset=utf-8",
            ExportFormat::Ndjson => "application/x-ndjson",
            ExportFormat::Parquet => "application/vnd.apache.parquet",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Csv => "csv",
            ExportFormat::Ndjson => "ndjson",
            ExportFormat::Parquet => "parquet",
        }
    }
}

/// A cursor as users pass it (`after=`): a sequence number of the stream's log.
pub fn parse_cursor(text: &str) -> Result<u64> {
    text.trim().parse().map_err(|_| {
        Error::Request(format!(
            "after: '{text}' is not a cursor; pass the Tally-Cursor of an earlier export"
        ))
    })
}

/// Encodes rows into one format, returning the bytes each call produced (a Parquet file's
/// bytes come a row group at a time, its footer at `finish`).
pub struct Encoder {
    columns: Vec<(String, Type)>,
    inner: Inner,
}

enum Inner {
    Csv {
        header: bool,
    },
    Ndjson,
    #[cfg(feature = "sql")]
    Parquet(Box<ParquetOut>),
}

#[cfg(feature = "sql")]
struct ParquetOut {
    schema: tally_sql::arrow::datatypes::SchemaRef,
    writer: parquet::arrow::ArrowWriter<SharedBuf>,
    buf: SharedBuf,
}

/// A `Write` whose bytes the encoder takes after each row group.
#[cfg(feature = "sql")]
#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

#[cfg(feature = "sql")]
impl SharedBuf {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[cfg(feature = "sql")]
impl std::io::Write for SharedBuf {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Encoder {
    pub fn new(format: ExportFormat, columns: Vec<(String, Type)>) -> Result<Encoder> {
        let inner = match format {
            ExportFormat::Csv => Inner::Csv { header: false },
            ExportFormat::Ndjson => Inner::Ndjson,
            #[cfg(feature = "sql")]
            ExportFormat::Parquet => {
                let schema = tally_sql::arrow_schema(&columns, "UTC");
                let buf = SharedBuf::default();
                let props = parquet::file::properties::WriterProperties::builder()
                    .set_compression(parquet::basic::Compression::SNAPPY)
                    .set_max_row_group_row_count(Some(ROW_GROUP))
                    .set_created_by(format!("tally {}", env!("CARGO_PKG_VERSION")))
                    .build();
                let writer =
                    parquet::arrow::ArrowWriter::try_new(buf.clone(), schema.clone(), Some(props))
                        .map_err(|e| Error::Invalid(format!("cannot write Parquet: {e}")))?;
                Inner::Parquet(Box::new(ParquetOut {
                    schema,
                    writer,
                    buf,
                }))
            }
            #[cfg(not(feature = "sql"))]
            ExportFormat::Parquet => {
                return Err(Error::Request(
                    "format: this build of Tally has no Parquet (the sql feature)".into(),
                ));
            }
        };
        Ok(Encoder { columns, inner })
    }

    /// Encodes rows (each in the columns' order).
    pub fn write(&mut self, rows: &[Vec<Value>]) -> Result<Vec<u8>> {
        match &mut self.inner {
            Inner::Csv { header } => {
                let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
                let bad = |e: csv::Error| Error::Invalid(format!("cannot write CSV: {e}"));
                if !*header {
                    w.write_record(self.columns.iter().map(|(n, _)| n.as_str()))
                        .map_err(bad)?;
                    *header = true;
                }
                for row in rows {
                    w.write_record(row.iter().map(|v| v.to_string()))
                        .map_err(bad)?;
                }
                w.into_inner()
                    .map_err(|e| Error::Invalid(format!("cannot write CSV: {e}")))
            }
            Inner::Ndjson => {
                let mut out = Vec::with_capacity(rows.len() * 64);
                // Written field by field, so that the columns keep their order.
                for row in rows {
                    out.push(b'{');
                    for (i, ((name, _), v)) in self.columns.iter().zip(row).enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        serde_json::to_writer(&mut out, name)
                            .and_then(|()| {
                                out.push(b':');
                                serde_json::to_writer(&mut out, &json_value(v))
                            })
                            .map_err(|e| Error::Invalid(format!("cannot write NDJSON: {e}")))?;
                    }
                    out.extend_from_slice(b"}\n");
                }
                Ok(out)
            }
            #[cfg(feature = "sql")]
            Inner::Parquet(p) => {
                if rows.is_empty() {
                    return Ok(Vec::new());
                }
                let batch = tally_sql::record_batch(p.schema.clone(), rows)
                    .map_err(|e| Error::Invalid(format!("cannot write Parquet: {e}")))?;
                p.writer
                    .write(&batch)
                    .map_err(|e| Error::Invalid(format!("cannot write Parquet: {e}")))?;
                Ok(p.buf.take())
            }
        }
    }

    /// The last bytes: a CSV header when no row came, a Parquet file's footer.
    pub fn finish(self) -> Result<Vec<u8>> {
        match self.inner {
            Inner::Csv { header: false } => {
                let mut this = Encoder {
                    columns: self.columns,
                    inner: Inner::Csv { header: false },
                };
                this.write(&[])
            }
            Inner::Csv { .. } | Inner::Ndjson => Ok(Vec::new()),
            #[cfg(feature = "sql")]
            Inner::Parquet(p) => {
                let ParquetOut { writer, buf, .. } = *p;
                writer
                    .close()
                    .map_err(|e| Error::Invalid(format!("cannot write Parquet: {e}")))?;
                Ok(buf.take())
            }
        }
    }
}

/// A stream's columns as an export writes them: `_seq` first, then the stream's.
pub fn stream_columns(stream: &StreamDef) -> Vec<(String, Type)> {
    std::iter::once(("_seq".to_owned(), Type::BigInt))
        .chain(stream.columns.iter().map(|c| (c.name.clone(), c.ty)))
        .collect()
}

/// A stored event as an export row: its sequence number, then its columns.
pub fn event_row(event: tally_views::Event) -> Vec<Value> {
    let mut row = Vec::with_capacity(event.row.len() + 1);
    row.push(Value::Int(event.seq as i64));
    row.extend(event.row);
    row
}

/// Encodes the events of `stream` with sequence numbers in `(after, head]`, a batch at a
/// time, handing each chunk of bytes to `sink` (which answers whether to go on), then the
/// encoder's last bytes.
pub fn write_stream(
    store: &tally_store::TenantStore,
    stream: &StreamDef,
    (after, head): (u64, u64),
    mut encoder: Encoder,
    mut sink: impl FnMut(Vec<u8>) -> Result<bool>,
) -> Result<()> {
    let mut next = after;
    while next < head {
        let events = store.read_events(stream, next, BATCH)?;
        let read = events.len();
        let rows: Vec<Vec<Value>> = events
            .into_iter()
            .take_while(|e| e.seq <= head)
            .map(|e| {
                next = e.seq;
                event_row(e)
            })
            .collect();
        if !sink(encoder.write(&rows)?)? {
            return Ok(());
        }
        if rows.len() < read || read < BATCH {
            break;
        }
    }
    sink(encoder.finish()?)?;
    Ok(())
}

impl TenantRuntime {
    /// A view export's rows — all of them, or those changed after `after` — and its cursor.
    pub fn export_view(
        &self,
        view: &str,
        req: &QueryRequest,
        after: Option<u64>,
    ) -> Result<(ResultSet, u64)> {
        let (index, plan) = self.view(view)?;
        let stream = self
            .catalog()
            .stream(&plan.stream)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("view {view} has no stream")))?;
        let head = self.store().last_seq(&stream)?;
        let Some(after) = after else {
            return Ok((self.query(view, req)?, head));
        };
        if after > head {
            return Err(Error::Request(format!(
                "after: cursor {after} is ahead of stream {}'s log ({head})",
                stream.name
            )));
        }
        // The groups the events after the cursor touched.
        let mut delta = self.engine().delta(|_| u64::MAX);
        delta.views[index].position = 0;
        let deleted = || {
            Error::Conflict(format!(
                "after: events of stream {} after cursor {after} were deleted (retention or an erasure); export again without after",
                stream.name
            ))
        };
        let mut next = after;
        while next < head {
            let events = self.store().read_events(&stream, next, BATCH)?;
            let read = events.len();
            let within: Vec<tally_views::Event> =
                events.into_iter().take_while(|e| e.seq <= head).collect();
            for e in &within {
                if e.seq != next + 1 {
                    return Err(deleted());
                }
                next = e.seq;
            }
            self.engine().apply(&stream.name, &within, &mut delta);
            if within.len() < read || read < BATCH {
                break;
            }
        }
        if next < head {
            return Err(deleted());
        }
        let query = QueryPlan::new(plan, req)?;
        let tz = self.engine().tz();
        let mut changed: HashSet<Vec<Value>> = HashSet::new();
        for key in delta.views[index].groups.keys() {
            if let Some(group) = query.answer_group(key, tz)? {
                changed.insert(group);
            }
        }
        let mut answer = self.query(view, req)?;
        answer
            .rows
            .retain(|row| changed.contains(&query.row_group(row)));
        Ok((answer, head))
    }
}
