//! A statement written once for both databases, with its values, and the little that differs in
//! binding them: how each database keeps an id, and what PostgreSQL's text cannot hold.
//!
//! Both drivers bind `$N` by number (SQLite takes `$N` as a parameter named by its number), so
//! one text serves both, and each database's prepared-statement cache keys on that text. A
//! statement written value by value (a multi-row insert) takes each database's own placeholder.

use std::{borrow::Cow, fmt::Write as _};

use invokd_core::UpstreamRef;
use sqlx::{
    Database, Decode, Encode, Postgres, Sqlite, Type,
    query::Query,
    types::{Json, uuid::fmt::Hyphenated},
};
use uuid::Uuid;

/// One value of a [`Statement`].
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    Int(i64),
    OptInt(Option<i64>),
    /// A value of an `integer` column on PostgreSQL (attempts, priorities).
    Int32(i32),
    Bool(bool),
    Text(String),
    OptText(Option<String>),
    /// Text from outside (log lines, error messages, key names), which may hold a U+0000 that
    /// PostgreSQL's text cannot: stored there as U+FFFD.
    Prose(String),
    Id(Uuid),
    Upstream(Option<UpstreamRef>),
}

/// A statement's text, the same on both databases, and its values in order (`$1`, `$2`, ...).
#[derive(Debug)]
pub(crate) struct Statement {
    sql: Cow<'static, str>,
    args: Vec<Arg>,
}

impl Statement {
    pub(crate) fn new(sql: impl Into<Cow<'static, str>>) -> Self {
        Self {
            sql: sql.into(),
            args: Vec::with_capacity(8),
        }
    }

    /// Adds the next value.
    pub(crate) fn arg(mut self, arg: Arg) -> Self {
        self.args.push(arg);
        self
    }

    /// Adds `arg` to a statement being written for `DB`, and its placeholder to the text (see
    /// [`Db::placeholder`]).
    pub(crate) fn push_arg<DB: Db>(&mut self, arg: Arg) {
        self.args.push(arg);
        DB::placeholder(self.sql.to_mut(), self.args.len());
    }

    /// Adds text to a statement being written.
    pub(crate) fn push(&mut self, sql: &str) {
        self.sql.to_mut().push_str(sql);
    }

    /// The statement ready to run on `DB`, its values handed over (kept prepared, as
    /// `sqlx::query` is).
    pub(crate) fn query<DB: Db>(&mut self) -> Query<'_, DB, DB::Arguments<'_>> {
        DB::query(&self.sql, std::mem::take(&mut self.args))
    }
}

/// What differs between the databases for the shared statements.
pub(crate) trait Db: Database {
    /// An id as the database keeps it: a uuid on PostgreSQL, hyphenated text on SQLite.
    type Id: for<'q> Encode<'q, Self> + for<'r> Decode<'r, Self> + Type<Self> + Send + 'static;
    /// What follows the value of a json column written as text: PostgreSQL would keep text.
    const JSON: &'static str;
    /// What ends a claim's choice of rows: on PostgreSQL, concurrent claimers pass over each
    /// other's rows instead of waiting or taking them; SQLite has one writer.
    const SKIP_LOCKED: &'static str;
    /// The text of a job's input `prompt`, in a listing's filter.
    const PROMPT: &'static str;

    fn id(id: Uuid) -> Self::Id;
    fn uuid(id: Self::Id) -> Uuid;
    /// Text from outside as the database can keep it.
    fn prose(text: String) -> String;
    /// Writes the placeholder of the `n`th value of a statement written value by value.
    fn placeholder(sql: &mut String, n: usize);
    /// `sql` with `args` bound.
    fn query(sql: &str, args: Vec<Arg>) -> Query<'_, Self, Self::Arguments<'_>>;
}

impl Db for Sqlite {
    type Id = Hyphenated;
    const JSON: &'static str = "";
    const SKIP_LOCKED: &'static str = "";
    const PROMPT: &'static str = "json_extract(input, '$.prompt')";

    fn id(id: Uuid) -> Self::Id {
        id.hyphenated()
    }
    fn uuid(id: Self::Id) -> Uuid {
        id.into_uuid()
    }
    fn prose(text: String) -> String {
        text
    }
    /// A bare `?`, numbered by its place: SQLite finds a named or numbered parameter's number
    /// by a scan of the statement's parameter names, once per parameter, which is quadratic in
    /// a multi-row insert's hundreds of values (a tenth of create's rate, measured).
    fn placeholder(sql: &mut String, _n: usize) {
        sql.push('?');
    }
    fn query(sql: &str, args: Vec<Arg>) -> Query<'_, Self, Self::Arguments<'_>> {
        bind_all(sqlx::query(sql), args)
    }
}

impl Db for Postgres {
    type Id = Uuid;
    const JSON: &'static str = "::json";
    const SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";
    const PROMPT: &'static str = "(input->>'prompt')";

    fn id(id: Uuid) -> Self::Id {
        id
    }
    fn uuid(id: Self::Id) -> Uuid {
        id
    }
    fn prose(text: String) -> String {
        match pg_text(&text) {
            Cow::Borrowed(_) => text,
            Cow::Owned(replaced) => replaced,
        }
    }
    fn query(sql: &str, args: Vec<Arg>) -> Query<'_, Self, Self::Arguments<'_>> {
        bind_all(sqlx::query(sql), args)
    }
    fn placeholder(sql: &mut String, n: usize) {
        // Writing to a String cannot fail.
        let _ = write!(sql, "${n}");
    }
}

/// PostgreSQL's `text` cannot hold U+0000, which SQLite keeps: a log line, an error message or a
/// key's name with one would be refused by the database. It is stored as U+FFFD instead.
pub(crate) fn pg_text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

/// `args` bound to `query`, as `DB` takes them; a value that cannot be encoded fails the
/// statement when it runs.
fn bind_all<'q, DB>(
    mut query: Query<'q, DB, DB::Arguments<'q>>,
    args: Vec<Arg>,
) -> Query<'q, DB, DB::Arguments<'q>>
where
    DB: Db,
    for<'a> i64: Encode<'a, DB> + Type<DB>,
    for<'a> Option<i64>: Encode<'a, DB> + Type<DB>,
    for<'a> i32: Encode<'a, DB> + Type<DB>,
    for<'a> bool: Encode<'a, DB> + Type<DB>,
    for<'a> String: Encode<'a, DB> + Type<DB>,
    for<'a> Option<String>: Encode<'a, DB> + Type<DB>,
    for<'a> Option<Json<UpstreamRef>>: Encode<'a, DB> + Type<DB>,
{
    for arg in args {
        query = match arg {
            Arg::Int(v) => query.bind(v),
            Arg::OptInt(v) => query.bind(v),
            Arg::Int32(v) => query.bind(v),
            Arg::Bool(v) => query.bind(v),
            Arg::Text(v) => query.bind(v),
            Arg::OptText(v) => query.bind(v),
            Arg::Prose(v) => query.bind(DB::prose(v)),
            Arg::Id(v) => query.bind(DB::id(v)),
            Arg::Upstream(v) => query.bind(v.map(Json)),
        };
    }
    query
}
