//! Tables: a tenant's reference data (`CREATE TABLE … PRIMARY KEY`), upserted and deleted by
//! key through the tenant's runtime, and read whole by query-time SQL.
//!
//! Rows are decoded at the edge as events are (`decode::table_row`: the same types, limits and
//! messages); a bad row is rejected with its index and reason and the others are stored, in one
//! transaction. Live views never read tables.

use std::sync::Arc;

use tally_views::{TableDef, Value};

use crate::decode::{table_row, text_cell};
use crate::error::{Error, Result};
use crate::runtime::TenantRuntime;

/// What an upsert did: rows stored, and each rejected row with its index and reason.
#[derive(Debug, Default)]
pub struct Upserted {
    pub upserted: u64,
    pub rejected: Vec<(usize, String)>,
}

impl TenantRuntime {
    /// The table called `name`.
    pub fn table(&self, name: &str) -> Result<Arc<TableDef>> {
        self.catalog().table(name).cloned().ok_or_else(|| {
            let names: Vec<&str> = self.catalog().tables().map(|t| t.name.as_str()).collect();
            Error::NotFound(if names.is_empty() {
                format!("there is no table {name}; the schema defines no tables (CREATE TABLE … PRIMARY KEY)")
            } else {
                format!(
                    "there is no table {name}; the tables are {}",
                    names.join(", ")
                )
            })
        })
    }

    /// Upserts rows given as JSON objects; a later row with the same key replaces an earlier.
    pub fn upsert_rows(&mut self, table: &str, records: &[String]) -> Result<Upserted> {
        let table = self.table(table)?;
        let mut rows = Vec::with_capacity(records.len());
        let mut outcome = Upserted::default();
        for (index, record) in records.iter().enumerate() {
            match table_row(&table, record) {
                Ok(row) => rows.push(row),
                Err(rejection) => outcome.rejected.push((index, rejection.message)),
            }
        }
        self.store_mut().upsert_rows(&table, &rows)?;
        outcome.upserted = rows.len() as u64;
        Ok(outcome)
    }

    /// Deletes the row whose key is `key` (as text, parsed for the key's type); whether it
    /// existed.
    pub fn delete_row(&mut self, table: &str, key: &str) -> Result<bool> {
        let table = self.table(table)?;
        let column = &table.columns[table.key];
        let key = text_cell(column.ty, key)
            .map_err(|e| Error::Invalid(format!("key of table {}: {e}", table.name)))?;
        Ok(self.store_mut().delete_row(&table, &key)?)
    }

    /// Every row of a table, in key order.
    pub fn table_rows(&self, table: &TableDef) -> Result<Vec<Vec<Value>>> {
        Ok(self.store().table_rows(table)?)
    }
}

/// The records of a table file as JSON objects: NDJSON (one object per non-empty line), a JSON
/// array of objects or one object (`Format::Json`), or CSV with a header row naming columns
/// (empty fields are `NULL`; values are converted for their columns as JSON strings are).
pub fn file_records(text: &str, format: crate::ingest::Format) -> Result<Vec<String>> {
    use crate::ingest::Format;
    match format {
        Format::Ndjson => Ok(text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect()),
        Format::Json => {
            let trimmed = text.trim_start();
            if trimmed.starts_with('[') {
                let items: Vec<&serde_json::value::RawValue> = serde_json::from_str(trimmed)
                    .map_err(|e| {
                        Error::Invalid(format!("the file is not a valid JSON array: {e}"))
                    })?;
                Ok(items.into_iter().map(|r| r.get().to_owned()).collect())
            } else {
                Ok(vec![trimmed.to_owned()])
            }
        }
        Format::Csv => {
            let mut reader = csv::ReaderBuilder::new().from_reader(text.as_bytes());
            let header: Vec<String> = reader
                .headers()
                .map_err(|e| Error::Invalid(format!("the CSV header cannot be read: {e}")))?
                .iter()
                .map(|h| h.trim().to_owned())
                .collect();
            let mut records = Vec::new();
            for (i, record) in reader.records().enumerate() {
                let record =
                    record.map_err(|e| Error::Invalid(format!("CSV record {}: {e}", i + 1)))?;
                let object: serde_json::Map<String, serde_json::Value> = header
                    .iter()
                    .zip(record.iter())
                    .map(|(name, field)| {
                        let value = if field.is_empty() {
                            serde_json::Value::Null
                        } else {
                            serde_json::Value::String(field.to_owned())
                        };
                        (name.clone(), value)
                    })
                    .collect();
                records.push(serde_json::Value::Object(object).to_string());
            }
            Ok(records)
        }
    }
}
