//! The catalog of streams and views, and [`ViewPlan`], the compiled form of a live view.
//!
//! A plan holds every decision the engine needs: which events pass the `WHERE`, how the group
//! key is computed (with the time bucket it contains), which aggregate states each group keeps
//! (each resolved to an [`AggKind`] for its input type, shared when the `SELECT` repeats an
//! aggregate), and how output columns are computed from those states. `Display` renders the plan
//! as text; the compiler tests compare that text.
//!
//! The pure logic of a view row lives here too, written once for every user (the flush, the
//! query, the oracle): [`ViewPlan::merge_row`] merges one group's states into another's, and
//! [`ViewPlan::finalize_row`] finalizes the states and evaluates every column.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use jiff::tz::TimeZone;

use crate::agg::{AggKind, AggState};
use crate::expr::{EvalCtx, EvalError, Expr};
use crate::time::Interval;
use crate::value::{Type, Value};

/// How ingest fills a column that the event leaves out (built-in streams only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnDefault {
    /// A new random UUID (a Segment `messageId` when the client sent none).
    Uuid,
    /// The time the event was received.
    ReceivedAt,
    /// A constant text.
    Text(&'static str),
}

/// A column of a stream.
#[derive(Clone, Debug, PartialEq)]
pub struct ColumnDef {
    pub name: String,
    pub ty: Type,
    pub not_null: bool,
    pub default: Option<ColumnDefault>,
    /// The only values ingest accepts, when restricted (built-in streams only).
    pub allowed: Option<&'static [&'static str]>,
}

/// A stream: a named, typed, append-only event log.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamDef {
    pub name: String,
    pub columns: Vec<ColumnDef>,
    /// Index of the event-time column.
    pub event_time: usize,
    /// Indexes of the dedupe-key columns (empty: no dedupe key; several: a composite key).
    pub dedupe_key: Vec<usize>,
    /// Raw events older than this are deleted and late events older than this are rejected.
    pub retention: Option<Interval>,
    /// Indexes of the columns that name the person an event is about (`WITH (person =
    /// 'column')`; `user_id` and `anonymous_id` in the built-in `events`): erasing a person
    /// deletes the events whose person column holds one of the person's ids.
    pub person: Vec<usize>,
    pub builtin: bool,
}

impl StreamDef {
    /// Whether events are deduplicated by a key.
    pub fn has_dedupe_key(&self) -> bool {
        !self.dedupe_key.is_empty()
    }

    /// The dedupe key of an event row: `None` without a key or when a key column is NULL (such
    /// events are never duplicates). A one-column key is the column's value; a composite key is
    /// one `TEXT` value that tells the parts apart ([`StreamDef::composite_key`]).
    pub fn dedupe_value(&self, row: &[Value]) -> Option<Value> {
        match self.dedupe_key.as_slice() {
            [] => None,
            [d] => Some(row[*d].clone()).filter(|v| !v.is_null()),
            key => {
                let parts: Vec<&Value> = key.iter().map(|&d| &row[d]).collect();
                StreamDef::composite_key(&parts)
            }
        }
    }

    /// The dedupe key of stored parts (the key columns' values, in key order): the one part, or
    /// the [`StreamDef::composite_key`] of several; `None` when a part is NULL.
    pub fn key_of_parts(parts: &[Value]) -> Option<Value> {
        match parts {
            [one] => Some(one.clone()).filter(|v| !v.is_null()),
            _ => StreamDef::composite_key(&parts.iter().collect::<Vec<_>>()),
        }
    }

    /// The `TEXT` key of a composite dedupe key's parts (`None` when one is NULL): each part's
    /// text prefixed by its length, so `('a:b', 'c')` and `('a', 'b:c')` differ.
    pub fn composite_key(parts: &[&Value]) -> Option<Value> {
        let mut text = String::new();
        for part in parts {
            if part.is_null() {
                return None;
            }
            let s = part.to_string();
            text.push_str(&format!("{}:{s};", s.len()));
        }
        Some(Value::text(&text))
    }

    /// The index of the column called `name`.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// The definition as canonical SQL: equal definitions give equal text.
    pub fn sql(&self) -> String {
        let cols: Vec<String> = self
            .columns
            .iter()
            .map(|c| {
                format!(
                    "{} {}{}",
                    c.name,
                    c.ty,
                    if c.not_null { " NOT NULL" } else { "" }
                )
            })
            .collect();
        let mut options = vec![format!(
            "event_time = '{}'",
            self.columns[self.event_time].name
        )];
        if !self.dedupe_key.is_empty() {
            let names: Vec<&str> = self
                .dedupe_key
                .iter()
                .map(|&d| self.columns[d].name.as_str())
                .collect();
            options.push(format!("dedupe_key = '{}'", names.join(", ")));
        }
        if let Some(r) = self.retention {
            options.push(format!("retention = '{r}'"));
        }
        // The built-in streams' person columns are part of Tally, not of their stored text.
        if let (false, [p]) = (self.builtin, self.person.as_slice()) {
            options.push(format!("person = '{}'", self.columns[*p].name));
        }
        format!(
            "CREATE STREAM {} ({}) WITH ({})",
            self.name,
            cols.join(", "),
            options.join(", ")
        )
    }
}

/// A group-by column of a view.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyColumn {
    pub name: String,
    pub expr: Expr,
    pub ty: Type,
    /// The bucket width when the key is `time_bucket` or `date_trunc`.
    pub bucket: Option<Interval>,
}

/// One aggregate state kept per group.
#[derive(Clone, Debug, PartialEq)]
pub struct AggPlan {
    pub kind: AggKind,
    /// The argument (`None` for `count(*)`).
    pub arg: Option<Expr>,
    /// The time argument of `first`/`last`.
    pub time: Option<Expr>,
    pub filter: Option<Expr>,
    pub input: Type,
    pub output: Type,
    /// SQL-like text, e.g. `sum(amount) FILTER (WHERE flow_type = 'deposit')`.
    pub display: String,
}

/// A computed output column: an expression over group keys and aggregates.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputColumn {
    pub name: String,
    pub expr: Expr,
    pub ty: Type,
}

/// Where a view column's value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnSource {
    Key(usize),
    Output(usize),
}

/// A column of a view, in `SELECT` order.
#[derive(Clone, Debug, PartialEq)]
pub struct ViewColumn {
    pub name: String,
    pub ty: Type,
    pub source: ColumnSource,
}

/// A compiled live view.
#[derive(Clone, Debug, PartialEq)]
pub struct ViewPlan {
    pub name: String,
    pub stream: String,
    /// View rows whose time bucket is older than this are deleted.
    pub retention: Option<Interval>,
    pub filter: Option<Expr>,
    pub keys: Vec<KeyColumn>,
    pub aggs: Vec<AggPlan>,
    pub outputs: Vec<OutputColumn>,
    pub columns: Vec<ViewColumn>,
    /// The key that is the view's time bucket, used by `--from/--to/--grain`.
    pub bucket: Option<usize>,
    /// How many time bucket expressions the view evaluates per event (cache slots).
    pub bucket_slots: usize,
    /// Whether some row-level expression can fail, so ingest must check events against it.
    pub can_fail: bool,
    /// The definition as SQL, as parsed: applying it again gives the same plan.
    pub sql: String,
    /// What the definition may not mean as written (an integer division), for `tally apply`
    /// to print; not part of the fingerprint.
    pub warnings: Vec<String>,
}

impl ViewPlan {
    /// The kinds of the aggregate states, in order.
    pub fn agg_kinds(&self) -> impl Iterator<Item = AggKind> + '_ {
        self.aggs.iter().map(|a| a.kind)
    }

    /// What identifies the view's behaviour: two definitions with the same fingerprint compute
    /// the same rows, whatever their spelling (case, whitespace, aliases of the stream).
    pub fn fingerprint(&self) -> String {
        self.to_string()
    }

    /// The column called `name`.
    pub fn column(&self, name: &str) -> Option<&ViewColumn> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Merges a group's states `from` into `into` (a delta into a stored row, or rows that
    /// re-grouping brings together). Merges are associative and commutative.
    pub fn merge_row(&self, into: &mut [AggState], from: &[AggState]) {
        for ((into, from), agg) in into.iter_mut().zip(from).zip(&self.aggs) {
            into.merge(agg.kind, from);
        }
    }

    /// [`ViewPlan::merge_row`] of states the caller gives up ([`AggState::merge_owned`]):
    /// a stored row's states, decoded for the merge.
    pub fn merge_row_owned(&self, into: &mut [AggState], from: Vec<AggState>) {
        for ((into, from), agg) in into.iter_mut().zip(from).zip(&self.aggs) {
            into.merge_owned(agg.kind, from);
        }
    }

    /// [`ViewPlan::merge_row_owned`] of a stored row's states still encoded, as the view table
    /// holds them: exact distinct sets are merged without being decoded
    /// ([`crate::agg::merge_encoded_states`]).
    pub fn merge_row_encoded(
        &self,
        into: &mut [AggState],
        stored: &[u8],
    ) -> Result<(), crate::codec::CodecError> {
        crate::agg::merge_encoded_states(self.agg_kinds(), into, stored)
    }

    /// Finishes merges that states defer (HyperLogLog registers): call once a row has all its
    /// merges and before it is finalized or encoded more than once. Reading an unsettled row
    /// is correct, only slower.
    pub fn settle_row(&self, states: &mut [AggState]) {
        for state in states {
            state.settle();
        }
    }

    /// Every column of a group, in view order: keys as they are, outputs computed from the
    /// finalized states. The first cell that cannot be computed (an overflowing sum, a division
    /// by zero) is the error.
    pub fn finalize_row(
        &self,
        key: &[Value],
        states: &[AggState],
        tz: &TimeZone,
    ) -> Result<Vec<Value>, CellError> {
        let aggs = states
            .iter()
            .zip(&self.aggs)
            .map(|(s, a)| {
                s.finalize(a.kind).map_err(|error| CellError {
                    column: a.display.clone(),
                    error,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.columns
            .iter()
            .map(|c| {
                self.cell(c, key, &aggs, tz).map_err(|error| CellError {
                    column: c.name.clone(),
                    error,
                })
            })
            .collect()
    }

    /// [`ViewPlan::finalize_row`] as view tables store it: a cell that cannot be computed is
    /// NULL (a query reads the states and reports the error instead).
    pub fn stored_row(&self, key: &[Value], states: &[AggState], tz: &TimeZone) -> Vec<Value> {
        let aggs: Vec<Value> = states
            .iter()
            .zip(&self.aggs)
            .map(|(s, a)| s.finalize(a.kind).unwrap_or(Value::Null))
            .collect();
        self.columns
            .iter()
            .map(|c| self.cell(c, key, &aggs, tz).unwrap_or(Value::Null))
            .collect()
    }

    /// Output `o` of a group, from its key and its finalized aggregate values.
    pub fn output_value(
        &self,
        o: usize,
        key: &[Value],
        aggs: &[Value],
        tz: &TimeZone,
    ) -> Result<Value, EvalError> {
        self.outputs[o].expr.eval(&EvalCtx::outputs(key, aggs, tz))
    }

    fn cell(
        &self,
        column: &ViewColumn,
        key: &[Value],
        aggs: &[Value],
        tz: &TimeZone,
    ) -> Result<Value, EvalError> {
        match column.source {
            ColumnSource::Key(k) => Ok(key[k].clone()),
            ColumnSource::Output(o) => self.output_value(o, key, aggs, tz),
        }
    }
}

/// A cell of a view row that cannot be computed: the column (or aggregate) and why.
#[derive(Clone, Debug, PartialEq)]
pub struct CellError {
    /// The view column, or the aggregate as written when its state cannot be finalized.
    pub column: String,
    pub error: EvalError,
}

impl fmt::Display for ViewPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "view {} on {}", self.name, self.stream)?;
        if let Some(r) = self.retention {
            writeln!(f, "  retention: {r}")?;
        }
        if let Some(filter) = &self.filter {
            writeln!(f, "  where: {filter}")?;
        }
        if !self.keys.is_empty() {
            writeln!(f, "  group by:")?;
            for (i, k) in self.keys.iter().enumerate() {
                let bucket = match (k.bucket, self.bucket == Some(i)) {
                    (Some(b), true) => format!(", time bucket {b}"),
                    (Some(b), false) => format!(", bucket {b}"),
                    _ => String::new(),
                };
                writeln!(f, "    {} = {}  [{}{bucket}]", k.name, k.expr, k.ty)?;
            }
        }
        if !self.aggs.is_empty() {
            writeln!(f, "  aggregates:")?;
            for (i, a) in self.aggs.iter().enumerate() {
                writeln!(
                    f,
                    "    #{i} {}  [{}, {}]",
                    a.display,
                    a.kind.class(),
                    a.output
                )?;
            }
        }
        if !self.outputs.is_empty() {
            writeln!(f, "  outputs:")?;
            for o in &self.outputs {
                writeln!(f, "    {} = {}  [{}]", o.name, o.expr, o.ty)?;
            }
        }
        let names: Vec<&str> = self.columns.iter().map(|c| c.name.as_str()).collect();
        writeln!(f, "  columns: {}", names.join(", "))?;
        if self.can_fail {
            writeln!(f, "  checked at ingest: yes")?;
        }
        Ok(())
    }
}

/// A saved query (`CREATE VIEW name AS SELECT … :param`): query-time SQL kept in the schema,
/// read like a view with its parameters. Tally's compiler only parses it and finds its
/// parameters; query-time SQL plans and runs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedQuery {
    pub name: String,
    /// The query text, as the parser prints it.
    pub query: String,
    /// The names of its `:name` parameters, in order of first use.
    pub params: Vec<String>,
}

impl SavedQuery {
    /// The definition as canonical SQL.
    pub fn sql(&self) -> String {
        format!("CREATE VIEW {} AS {}", self.name, self.query)
    }
}

/// A table (`CREATE TABLE name (… PRIMARY KEY …)`): a tenant's reference data, rows upserted
/// and deleted by primary key. Live views do not read tables; query-time SQL does.
#[derive(Clone, Debug, PartialEq)]
pub struct TableDef {
    pub name: String,
    pub columns: Vec<ColumnDef>,
    /// Index of the primary-key column (always `NOT NULL`).
    pub key: usize,
}

impl TableDef {
    /// The index of the column called `name`.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// The definition as canonical SQL: equal definitions give equal text.
    pub fn sql(&self) -> String {
        let cols: Vec<String> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let constraint = if i == self.key {
                    " PRIMARY KEY"
                } else if c.not_null {
                    " NOT NULL"
                } else {
                    ""
                };
                format!("{} {}{constraint}", c.name, c.ty)
            })
            .collect();
        format!("CREATE TABLE {} ({})", self.name, cols.join(", "))
    }
}

/// The streams, views and saved queries of the schema. Every tenant has the same catalog, each
/// with its own data. The built-in streams `events` and `metrics` are always present.
#[derive(Clone, Debug)]
pub struct Catalog {
    streams: BTreeMap<String, Arc<StreamDef>>,
    views: BTreeMap<String, Arc<ViewPlan>>,
    queries: BTreeMap<String, Arc<SavedQuery>>,
    tables: BTreeMap<String, Arc<TableDef>>,
    /// User definitions in the order they were created, as canonical SQL: what the store keeps.
    order: Vec<String>,
}

impl Default for Catalog {
    fn default() -> Catalog {
        Catalog::new()
    }
}

impl Catalog {
    /// A catalog without even the built-in streams ([`Catalog::new`] adds them).
    pub(crate) fn empty() -> Catalog {
        Catalog {
            streams: BTreeMap::new(),
            views: BTreeMap::new(),
            queries: BTreeMap::new(),
            tables: BTreeMap::new(),
            order: Vec::new(),
        }
    }

    pub fn stream(&self, name: &str) -> Option<&Arc<StreamDef>> {
        self.streams.get(name)
    }

    pub fn view(&self, name: &str) -> Option<&Arc<ViewPlan>> {
        self.views.get(name)
    }

    /// A saved query by name.
    pub fn saved_query(&self, name: &str) -> Option<&Arc<SavedQuery>> {
        self.queries.get(name)
    }

    /// A table by name.
    pub fn table(&self, name: &str) -> Option<&Arc<TableDef>> {
        self.tables.get(name)
    }

    pub fn tables(&self) -> impl Iterator<Item = &Arc<TableDef>> {
        self.tables.values()
    }

    /// Whether any stream, view, saved query or table is called `name`.
    pub fn has(&self, name: &str) -> bool {
        self.streams.contains_key(name)
            || self.views.contains_key(name)
            || self.queries.contains_key(name)
            || self.tables.contains_key(name)
    }

    pub fn saved_queries(&self) -> impl Iterator<Item = &Arc<SavedQuery>> {
        self.queries.values()
    }

    pub fn streams(&self) -> impl Iterator<Item = &Arc<StreamDef>> {
        self.streams.values()
    }

    pub fn views(&self) -> impl Iterator<Item = &Arc<ViewPlan>> {
        self.views.values()
    }

    /// The views that read `stream`.
    pub fn views_of<'a>(&'a self, stream: &'a str) -> impl Iterator<Item = &'a Arc<ViewPlan>> + 'a {
        self.views.values().filter(move |v| v.stream == stream)
    }

    /// The names of user-defined objects in creation order.
    pub fn order(&self) -> &[String] {
        &self.order
    }

    /// Adds a built-in stream: present in every catalog, never among the user definitions.
    pub(crate) fn put_builtin(&mut self, def: StreamDef) {
        self.streams.insert(def.name.clone(), Arc::new(def));
    }

    pub(crate) fn put_stream(&mut self, def: StreamDef) {
        if !self.order.contains(&def.name) {
            self.order.push(def.name.clone());
        }
        self.streams.insert(def.name.clone(), Arc::new(def));
    }

    pub(crate) fn put_view(&mut self, plan: ViewPlan) {
        if !self.order.contains(&plan.name) {
            self.order.push(plan.name.clone());
        }
        self.views.insert(plan.name.clone(), Arc::new(plan));
    }

    pub(crate) fn put_query(&mut self, query: SavedQuery) {
        if !self.order.contains(&query.name) {
            self.order.push(query.name.clone());
        }
        self.queries.insert(query.name.clone(), Arc::new(query));
    }

    pub(crate) fn put_table(&mut self, def: TableDef) {
        if !self.order.contains(&def.name) {
            self.order.push(def.name.clone());
        }
        self.tables.insert(def.name.clone(), Arc::new(def));
    }

    pub(crate) fn remove(&mut self, name: &str) {
        self.order.retain(|n| n != name);
        self.streams.remove(name);
        self.views.remove(name);
        self.queries.remove(name);
        self.tables.remove(name);
    }

    /// The canonical SQL of every user definition, in creation order: applying it to a new
    /// catalog rebuilds this one.
    pub fn definitions(&self) -> Vec<(String, String)> {
        self.order
            .iter()
            .filter_map(|name| {
                if let Some(v) = self.views.get(name) {
                    Some((name.clone(), v.sql.clone()))
                } else if let Some(q) = self.queries.get(name) {
                    Some((name.clone(), q.sql()))
                } else if let Some(t) = self.tables.get(name) {
                    Some((name.clone(), t.sql()))
                } else {
                    self.streams.get(name).map(|s| (name.clone(), s.sql()))
                }
            })
            .collect()
    }
}
