//! The SQL both backends run: schema, write statements and the search query builder.
//! One builder, two dialects (placeholders and column types differ; semantics do not).

use crate::{HistoryQuery, PatientKey, SearchPlan, Visibility};
use fascicolo_fhir::datetime;
use fascicolo_fhir::params::{registry, IndexValue, ParamType};
use fascicolo_fhir::search::{Clause, Modifier, Prefix, SortKey, Term};
use serde_json::Value;
use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A bound parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Text(String),
    Int(i64),
    Real(f64),
    Key(PatientKey),
    Uuid(uuid::Uuid),
    Null,
}

/// SQL text with its parameters, numbered for the dialect.
#[derive(Debug, Clone)]
pub struct SqlBuf {
    pub sql: String,
    pub params: Vec<SqlValue>,
    pub dialect: Dialect,
}

impl SqlBuf {
    pub fn new(dialect: Dialect) -> Self {
        Self { sql: String::with_capacity(512), params: Vec::new(), dialect }
    }
    pub fn s(&mut self, text: &str) -> &mut Self {
        self.sql.push_str(text);
        self
    }
    /// Append a placeholder bound to `v`.
    pub fn p(&mut self, v: SqlValue) -> &mut Self {
        self.params.push(v);
        let n = self.params.len();
        let _ = match self.dialect {
            Dialect::Sqlite => write!(self.sql, "?{n}"),
            Dialect::Postgres => write!(self.sql, "${n}"),
        };
        self
    }
    pub fn text(&mut self, v: &str) -> &mut Self {
        self.p(SqlValue::Text(v.to_string()))
    }
}

/// Index tables and their value columns.
pub const INDEX_TABLES: &[(&str, &str)] = &[
    ("idx_token", "system TEXT, code TEXT, text TEXT"),
    ("idx_string", "norm TEXT NOT NULL, exact TEXT NOT NULL"),
    ("idx_date", "lo BIGINT NOT NULL, hi BIGINT NOT NULL"),
    ("idx_ref", "target_type TEXT, target_id TEXT, url TEXT"),
    ("idx_number", "value REAL NOT NULL"),
    ("idx_quantity", "value REAL NOT NULL, system TEXT, code TEXT, unit TEXT"),
    ("idx_uri", "value TEXT NOT NULL"),
];

/// Statements that delete the index rows a database written before decision 0010 holds for
/// parameters now answered from other parameters' rows (migration 4): their own rows, their
/// composites' component rows and, unless the alias keeps them, their modifier rows.
pub fn alias_row_deletes() -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let mut aliases: Vec<_> = registry().aliases().collect();
    aliases.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let mut out = String::new();
    for (rt, code, alias) in aliases {
        let mut cond =
            format!("param = {} OR (param >= {} AND param < {})", quote(code), quote(&format!("{code}#")), quote(&format!("{code}$")));
        if alias.target_type.is_none() {
            let _ = write!(cond, " OR (param >= {} AND param < {})", quote(&format!("{code}:")), quote(&format!("{code};")));
        }
        for (table, _) in INDEX_TABLES {
            let _ = writeln!(out, "DELETE FROM {table} WHERE res_type = {} AND ({cond});", quote(rt));
        }
    }
    out
}

/// The index table of a parameter type.
pub fn table_of(kind: ParamType) -> &'static str {
    match kind {
        ParamType::Token | ParamType::Composite | ParamType::Special => "idx_token",
        ParamType::String => "idx_string",
        ParamType::Date => "idx_date",
        ParamType::Reference => "idx_ref",
        ParamType::Number => "idx_number",
        ParamType::Quantity => "idx_quantity",
        ParamType::Uri => "idx_uri",
    }
}

/// The table and value parameters of one index row.
pub fn index_row(v: &IndexValue) -> (&'static str, Vec<SqlValue>) {
    let t = |o: &Option<String>| o.clone().map_or(SqlValue::Null, SqlValue::Text);
    match v {
        IndexValue::Token { system, code, text } => ("idx_token", vec![t(system), t(code), t(text)]),
        IndexValue::String { norm, exact } => ("idx_string", vec![SqlValue::Text(norm.clone()), SqlValue::Text(exact.clone())]),
        IndexValue::Date(r) => ("idx_date", vec![SqlValue::Int(r.low), SqlValue::Int(r.high)]),
        IndexValue::Reference { target_type, target_id, url } => ("idx_ref", vec![t(target_type), t(target_id), t(url)]),
        IndexValue::Number(n) => ("idx_number", vec![SqlValue::Real(*n)]),
        IndexValue::Quantity { value, system, code, unit } => ("idx_quantity", vec![SqlValue::Real(*value), t(system), t(code), t(unit)]),
        IndexValue::Uri(u) => ("idx_uri", vec![SqlValue::Text(u.clone())]),
    }
}

/// Column names of the value part of an index table.
pub fn value_columns(table: &str) -> &'static [&'static str] {
    match table {
        "idx_token" => &["system", "code", "text"],
        "idx_string" => &["norm", "exact"],
        "idx_date" => &["lo", "hi"],
        "idx_ref" => &["target_type", "target_id", "url"],
        "idx_quantity" => &["value", "system", "code", "unit"],
        _ => &["value"],
    }
}

/// `INSERT INTO table (...) VALUES (...), ...` for `rows` rows.
pub fn insert_index_sql(d: Dialect, table: &str, rows: usize) -> String {
    let cols = value_columns(table);
    let width = 6 + cols.len();
    // SQLite: OR FAIL, so a multi-row statement needs no statement journal (a copy of every page
    // it touches, kept to undo its earlier rows should a later one break a constraint). On an
    // error the caller rolls back the whole change set anyway.
    let verb = if d == Dialect::Sqlite { "INSERT OR FAIL" } else { "INSERT" };
    multi_insert_sql(
        d,
        &format!("{verb} INTO {table} (patient_key, res_type, res_id, param, seq, grp, {})", cols.join(", ")),
        width,
        rows,
        "",
    )
}

/// `head VALUES (...), (...) tail` for `rows` rows of `width` parameters each.
pub fn multi_insert_sql(d: Dialect, head: &str, width: usize, rows: usize, tail: &str) -> String {
    let mut s = format!("{head} VALUES ");
    for r in 0..rows {
        if r > 0 {
            s.push_str(", ");
        }
        s.push('(');
        for c in 0..width {
            if c > 0 {
                s.push_str(", ");
            }
            s.push_str(&ph(d, r * width + c + 1));
        }
        s.push(')');
    }
    s.push_str(tail);
    s
}

fn ph(d: Dialect, n: usize) -> String {
    match d {
        Dialect::Sqlite => format!("?{n}"),
        Dialect::Postgres => format!("${n}"),
    }
}

/// Statements of the write path, numbered for the dialect.
pub struct WriteSql {
    pub current_version: String,
    pub delete_current: String,
    pub delete_index: Vec<String>,
    pub upsert_current: String,
    pub insert_history: String,
    /// Gives the history row of the version being replaced its content (taken from the current
    /// row): a history row holds content only once its version is no longer current.
    /// Params: patient_key, res_type, id, version.
    pub fill_history: String,
    pub upsert_locator: String,
    /// Claims a new (type, id); affects no row when it exists.
    pub insert_locator_new: String,
}

/// The statements for the dialect, built once.
pub fn write_sql(d: Dialect) -> &'static WriteSql {
    static SQLITE: std::sync::OnceLock<WriteSql> = std::sync::OnceLock::new();
    static POSTGRES: std::sync::OnceLock<WriteSql> = std::sync::OnceLock::new();
    match d {
        Dialect::Sqlite => SQLITE.get_or_init(|| build_write_sql(d)),
        Dialect::Postgres => POSTGRES.get_or_init(|| build_write_sql(d)),
    }
}

fn build_write_sql(d: Dialect) -> WriteSql {
    let p = |n| ph(d, n);
    WriteSql {
        current_version: format!(
            "SELECT version FROM resources WHERE patient_key = {} AND res_type = {} AND id = {}",
            p(1),
            p(2),
            p(3)
        ),
        delete_current: format!("DELETE FROM resources WHERE patient_key = {} AND res_type = {} AND id = {}", p(1), p(2), p(3)),
        delete_index: INDEX_TABLES
            .iter()
            .map(|(t, _)| format!("DELETE FROM {t} WHERE patient_key = {} AND res_type = {} AND res_id = {}", p(1), p(2), p(3)))
            .collect(),
        upsert_current: format!(
            "INSERT INTO resources (patient_key, res_type, id, version, last_updated, deleted, content, restrict_bits) VALUES ({}, {}, {}, {}, {}, {}, {}, {}) \
             ON CONFLICT (patient_key, res_type, id) DO UPDATE SET version = excluded.version, last_updated = excluded.last_updated, \
             deleted = excluded.deleted, content = excluded.content, restrict_bits = excluded.restrict_bits",
            p(1), p(2), p(3), p(4), p(5), p(6), p(7), p(8)
        ),
        insert_history: format!(
            "INSERT INTO resource_history (patient_key, res_type, id, version, last_updated, deleted, method, content) \
             VALUES ({}, {}, {}, {}, {}, {}, {}, {})",
            p(1), p(2), p(3), p(4), p(5), p(6), p(7), p(8)
        ),
        fill_history: format!(
            "UPDATE resource_history SET content = (SELECT c.content FROM resources c WHERE c.patient_key = {k} AND c.res_type = {t} AND c.id = {i}) \
             WHERE patient_key = {k} AND res_type = {t} AND id = {i} AND version = {v} AND deleted = 0",
            k = p(1),
            t = p(2),
            i = p(3),
            v = p(4)
        ),
        upsert_locator: format!(
            "INSERT INTO locator (res_type, id, patient_key) VALUES ({}, {}, {}) ON CONFLICT (res_type, id) DO UPDATE SET patient_key = excluded.patient_key",
            p(1), p(2), p(3)
        ),
        insert_locator_new: format!(
            "INSERT INTO locator (res_type, id, patient_key) VALUES ({}, {}, {}) ON CONFLICT (res_type, id) DO NOTHING",
            p(1), p(2), p(3)
        ),
    }
}

pub const RESOURCE_COLS: &str = "r.patient_key, r.res_type, r.id, r.version, r.last_updated, r.deleted, r.content";

/// Read the current version through the locator.
pub fn read_sql(d: Dialect) -> String {
    format!(
        "SELECT {RESOURCE_COLS} FROM locator l JOIN resources r ON r.patient_key = l.patient_key AND r.res_type = l.res_type AND r.id = l.id \
         WHERE l.res_type = {} AND l.id = {}",
        ph(d, 1),
        ph(d, 2)
    )
}

/// [`read_sql`] with the facts version of the resource's record as the last column.
pub fn read_with_facts_sql(d: Dialect) -> String {
    format!(
        "SELECT {RESOURCE_COLS}, COALESCE((SELECT f.version FROM partition_facts f WHERE f.patient_key = r.patient_key), 0) \
         FROM locator l JOIN resources r ON r.patient_key = l.patient_key AND r.res_type = l.res_type AND r.id = l.id \
         WHERE l.res_type = {} AND l.id = {}",
        ph(d, 1),
        ph(d, 2)
    )
}

/// History rows with their content: a row's own, or (for the version that is current, whose
/// history row holds none) the current row's.
pub const HISTORY_COLS: &str =
    "r.patient_key, r.res_type, r.id, r.version, r.last_updated, r.deleted, COALESCE(c.content, r.content), r.method";

/// The join [`HISTORY_COLS`] reads the current version's content through.
pub const HISTORY_CURRENT: &str = "LEFT JOIN resources c ON c.patient_key = r.patient_key AND c.res_type = r.res_type \
     AND c.id = r.id AND c.version = r.version AND r.deleted = 0";

pub fn vread_sql(d: Dialect) -> String {
    format!(
        "SELECT {HISTORY_COLS} FROM locator l \
         JOIN resource_history r ON r.patient_key = l.patient_key AND r.res_type = l.res_type AND r.id = l.id {HISTORY_CURRENT} \
         WHERE l.res_type = {} AND l.id = {} AND r.version = {}",
        ph(d, 1),
        ph(d, 2),
        ph(d, 3)
    )
}

/// History query.
pub fn history_sql(d: Dialect, q: &HistoryQuery) -> SqlBuf {
    let mut b = SqlBuf::new(d);
    b.s("SELECT ").s(HISTORY_COLS).s(" FROM resource_history r ").s(HISTORY_CURRENT).s(" WHERE 1=1");
    if let Some(k) = q.patient {
        b.s(" AND r.patient_key = ").p(SqlValue::Key(k));
    }
    if let Some(t) = &q.resource_type {
        b.s(" AND r.res_type = ").text(t);
    }
    if let Some(id) = &q.id {
        b.s(" AND r.id = ").text(id);
    }
    if let Some(since) = q.since {
        b.s(" AND r.last_updated >= ").p(SqlValue::Int(since));
    }
    if let Some((lu, t, id, v)) = &q.before {
        b.s(" AND (r.last_updated < ").p(SqlValue::Int(*lu));
        b.s(" OR (r.last_updated = ").p(SqlValue::Int(*lu)).s(" AND (r.res_type > ").text(t);
        b.s(" OR (r.res_type = ").text(t).s(" AND (r.id > ").text(id);
        b.s(" OR (r.id = ").text(id).s(" AND r.version < ").p(SqlValue::Int(*v)).s("))))))");
    }
    b.s(" ORDER BY r.last_updated DESC, r.res_type, r.id, r.version DESC LIMIT ");
    b.p(SqlValue::Int(q.limit as i64));
    b
}

/// The subject a clause is about: a resource row alias.
#[derive(Clone, Copy)]
struct Subject<'a> {
    alias: &'a str,
    /// The viewer's filter, applied again to chained targets and `_has` sources.
    vis: Option<&'a Visibility>,
    patient: Option<PatientKey>,
    /// The driving clause becomes an `IN (...)` the planner starts from; the others are
    /// correlated `EXISTS` probes on the owner index.
    driver: bool,
}

const TEXT_MAX: &str = "\u{10FFFF}";

fn like_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('%');
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            o.push('\\');
        }
        o.push(c);
    }
    o.push('%');
    o
}

fn date_cond(b: &mut SqlBuf, lo: &str, hi: &str, prefix: Prefix, slo: i64, shi: i64) {
    let i = SqlValue::Int;
    match prefix {
        Prefix::Eq => {
            b.s(&format!("({lo} >= ")).p(i(slo)).s(&format!(" AND {hi} <= ")).p(i(shi)).s(")");
        }
        Prefix::Ne => {
            b.s(&format!("({lo} < ")).p(i(slo)).s(&format!(" OR {hi} > ")).p(i(shi)).s(")");
        }
        Prefix::Gt => {
            b.s(&format!("{hi} > ")).p(i(shi));
        }
        Prefix::Lt => {
            b.s(&format!("{lo} < ")).p(i(slo));
        }
        Prefix::Ge => {
            b.s(&format!("({hi} > ")).p(i(shi)).s(&format!(" OR ({lo} >= ")).p(i(slo)).s(&format!(" AND {hi} <= ")).p(i(shi)).s("))");
        }
        Prefix::Le => {
            b.s(&format!("({lo} < ")).p(i(slo)).s(&format!(" OR ({lo} >= ")).p(i(slo)).s(&format!(" AND {hi} <= ")).p(i(shi)).s("))");
        }
        Prefix::Sa => {
            b.s(&format!("{lo} > ")).p(i(shi));
        }
        Prefix::Eb => {
            b.s(&format!("{hi} < ")).p(i(slo));
        }
        Prefix::Ap => {
            let gap = ((datetime::now_ms() - slo).abs() / 10).max(86_400_000);
            b.s(&format!("({hi} >= ")).p(i(slo - gap)).s(&format!(" AND {lo} <= ")).p(i(shi + gap)).s(")");
        }
    }
}

fn number_cond(b: &mut SqlBuf, col: &str, prefix: Prefix, value: f64, low: f64, high: f64) {
    let r = SqlValue::Real;
    match prefix {
        Prefix::Eq => b.s(&format!("({col} >= ")).p(r(low)).s(&format!(" AND {col} < ")).p(r(high)).s(")"),
        Prefix::Ne => b.s(&format!("({col} < ")).p(r(low)).s(&format!(" OR {col} >= ")).p(r(high)).s(")"),
        Prefix::Gt | Prefix::Sa => b.s(&format!("{col} > ")).p(r(value)),
        Prefix::Lt | Prefix::Eb => b.s(&format!("{col} < ")).p(r(value)),
        Prefix::Ge => b.s(&format!("{col} >= ")).p(r(value)),
        Prefix::Le => b.s(&format!("{col} <= ")).p(r(value)),
        Prefix::Ap => {
            let d = (value * 0.1).abs();
            b.s(&format!("({col} >= ")).p(r(value - d)).s(&format!(" AND {col} <= ")).p(r(value + d)).s(")")
        }
    };
}

/// The condition of one term on index alias `x`.
fn term_cond(b: &mut SqlBuf, x: &str, modifier: &Modifier, term: &Term) {
    match term {
        Term::Token { system, code } => {
            b.s("(1=1");
            match system {
                None => {}
                Some(None) => {
                    b.s(&format!(" AND {x}.system IS NULL"));
                }
                Some(Some(sys)) => {
                    b.s(&format!(" AND {x}.system = ")).text(sys);
                }
            }
            if let Some(c) = code {
                b.s(&format!(" AND {x}.code = ")).text(c);
            }
            b.s(")");
        }
        Term::Text(t) => {
            b.s(&format!("{x}.text LIKE ")).p(SqlValue::Text(like_escape(t))).s(" ESCAPE '\\'");
        }
        Term::String { norm, exact } => match modifier {
            Modifier::Exact => {
                b.s(&format!("{x}.exact = ")).text(exact);
            }
            Modifier::Contains => {
                b.s(&format!("{x}.norm LIKE ")).p(SqlValue::Text(like_escape(norm))).s(" ESCAPE '\\'");
            }
            _ => {
                b.s(&format!("({x}.norm >= "))
                    .text(norm)
                    .s(&format!(" AND {x}.norm < "))
                    .p(SqlValue::Text(format!("{norm}{TEXT_MAX}")))
                    .s(")");
            }
        },
        Term::Date { prefix, range } => date_cond(b, &format!("{x}.lo"), &format!("{x}.hi"), *prefix, range.low, range.high),
        Term::Number { prefix, value, low, high } => number_cond(b, &format!("{x}.value"), *prefix, *value, *low, *high),
        Term::Quantity { prefix, value, low, high, system, code } => {
            b.s("(");
            number_cond(b, &format!("{x}.value"), *prefix, *value, *low, *high);
            if let Some(c) = code {
                match system {
                    Some(s) => {
                        b.s(&format!(" AND {x}.system = ")).text(s).s(&format!(" AND {x}.code = ")).text(c);
                    }
                    None => {
                        b.s(&format!(" AND ({x}.code = ")).text(c).s(&format!(" OR {x}.unit = ")).text(c).s(")");
                    }
                }
            } else if let Some(s) = system {
                b.s(&format!(" AND {x}.system = ")).text(s);
            }
            b.s(")");
        }
        Term::Reference { target_type, id, url } => {
            b.s("(");
            match (target_type, id) {
                (Some(t), Some(i)) => {
                    b.s(&format!("({x}.target_type = ")).text(t).s(&format!(" AND {x}.target_id = ")).text(i).s(")");
                }
                (None, Some(i)) => {
                    b.s(&format!("{x}.target_id = ")).text(i);
                }
                _ => {
                    b.s("1=0");
                }
            }
            if let Some(u) = url {
                b.s(&format!(" OR {x}.url = ")).text(u);
            }
            b.s(")");
        }
        Term::Uri(u) => match modifier {
            Modifier::Below => {
                b.s(&format!("({x}.value >= ")).text(u).s(&format!(" AND {x}.value < ")).p(SqlValue::Text(format!("{u}{TEXT_MAX}"))).s(")");
            }
            Modifier::Above => {
                b.s("substr(").text(u).s(&format!(", 1, length({x}.value)) = {x}.value"));
            }
            Modifier::Contains => {
                b.s(&format!("{x}.value LIKE ")).p(SqlValue::Text(like_escape(u))).s(" ESCAPE '\\'");
            }
            _ => {
                b.s(&format!("{x}.value = ")).text(u);
            }
        },
        // composites are matched by `composite_sql`, component by component
        Term::Composite(_) => {
            b.s("1=0");
        }
    }
}

/// `(subject) IN (SELECT ... FROM table x WHERE x.res_type = .. AND x.param = .. AND <body>)`
fn membership(
    b: &mut SqlBuf,
    subj: Subject<'_>,
    resource_type: &str,
    table: &str,
    param: &str,
    negate: bool,
    body: impl FnOnce(&mut SqlBuf),
) {
    let a = subj.alias;
    if subj.driver && !negate {
        b.s(&format!(
            "({a}.patient_key, {a}.res_type, {a}.id) IN (SELECT x.patient_key, x.res_type, x.res_id FROM {table} x WHERE x.res_type = "
        ));
        b.text(resource_type).s(" AND ");
        param_cond(b, "x", resource_type, param);
        if let Some(k) = subj.patient {
            b.s(" AND x.patient_key = ").p(SqlValue::Key(k));
        }
    } else {
        if negate {
            b.s("NOT ");
        }
        b.s(&format!(
            "EXISTS (SELECT 1 FROM {table} x{} WHERE x.patient_key = {a}.patient_key AND x.res_type = {a}.res_type AND x.res_id = {a}.id AND ",
            owner_hint(b.dialect, table)
        ));
        param_cond(b, "x", resource_type, param);
        b.s(" AND ");
        body(b);
        b.s(probe_fence(b.dialect));
        b.s(")");
        return;
    }
    b.s(" AND ");
    body(b);
    b.s(")");
}

/// `{x}.param` naming the index rows of `name` (a parameter code of `resource_type`, perhaps
/// with `#i` for a composite's component or `:suffix` for its modifier rows): its own rows, or
/// those of the parameters its [`Alias`](fascicolo_fhir::params::Alias) points at (decision
/// 0010), restricted to references to the alias's target type when it has one.
fn param_cond(b: &mut SqlBuf, x: &str, resource_type: &str, name: &str) {
    let (base, suffix) = name.find(['#', ':']).map_or((name, ""), |i| name.split_at(i));
    // a type-restricted alias keeps its own modifier rows
    let alias = registry().alias(resource_type, base).filter(|a| a.target_type.is_none() || !suffix.starts_with(':'));
    let Some(alias) = alias else {
        b.s(x).s(".param = ").text(name);
        return;
    };
    b.s("(").s(x).s(".param");
    if let [one] = alias.sources.as_slice() {
        b.s(" = ").p(SqlValue::Text(format!("{one}{suffix}")));
    } else {
        b.s(" IN (");
        for (i, source) in alias.sources.iter().enumerate() {
            if i > 0 {
                b.s(", ");
            }
            b.p(SqlValue::Text(format!("{source}{suffix}")));
        }
        b.s(")");
    }
    if let Some(t) = &alias.target_type {
        b.s(" AND ").s(x).s(".target_type = ").text(t);
    }
    b.s(")");
}

/// The viewer's filter on the row `a`; `shared_pass` lets shared rows (no patient) through.
fn visibility_sql(b: &mut SqlBuf, a: &str, v: &Visibility, shared_pass: bool) {
    let labels = |b: &mut SqlBuf, param: &str, codings: &[(String, String)]| {
        b.s(&format!(
            "EXISTS (SELECT 1 FROM idx_token x{} WHERE x.patient_key = {a}.patient_key AND x.res_type = {a}.res_type AND x.res_id = {a}.id AND x.param = ",
            owner_hint(b.dialect, "idx_token")
        ));
        b.text(param).s(" AND (");
        for (i, (system, code)) in codings.iter().enumerate() {
            if i > 0 {
                b.s(" OR ");
            }
            b.s("(x.system = ").text(system).s(" AND x.code = ").text(code).s(")");
        }
        let fence = probe_fence(b.dialect);
        b.s(")").s(fence).s(")");
    };
    b.s("(");
    if shared_pass {
        b.s(&format!("{a}.patient_key = ")).p(SqlValue::Key(PatientKey::SHARED)).s(" OR ");
    }
    if v.deny_all {
        b.s("1=0");
    } else if v.deny_bits == 0 {
        b.s("1=1");
    } else {
        b.s(&format!("({a}.restrict_bits & ")).p(SqlValue::Int(v.deny_bits)).s(") = 0");
    }
    if !v.allow_tags.is_empty() {
        b.s(" OR ");
        labels(b, "_tag", &v.allow_tags);
    }
    b.s(")");
}

/// SQLite: pin a probe to the owner key (its statistics can prefer the value index, which for a
/// patient reference means scanning every row of the patient per probe). The index tables are
/// WITHOUT ROWID (migration 4): the owner key is their primary key, which SQLite names
/// `sqlite_autoindex_<table>_1`.
fn owner_hint(d: Dialect, table: &str) -> String {
    match d {
        Dialect::Sqlite => format!(" INDEXED BY sqlite_autoindex_{table}_1"),
        Dialect::Postgres => String::new(),
    }
}

/// Keeps a correlated probe a per-row lookup on the owner key. PostgreSQL otherwise flattens it
/// into a semi-join, and a cached generic plan (which does not see the values) chose a global
/// index scan for it: 558 ms instead of under 1 ms at 1M resources. `OFFSET 0` is the standard
/// fence against that flattening; SQLite never flattens EXISTS.
fn probe_fence(d: Dialect) -> &'static str {
    match d {
        Dialect::Postgres => " OFFSET 0",
        Dialect::Sqlite => "",
    }
}

/// How selective a clause usually is (lower drives the query); `None` never drives.
/// A reference to the very patient whose partition the plan is restricted to never drives: the
/// partition scan in primary-key order already yields the page without sorting every match.
fn clause_rank(c: &Clause, patient: Option<PatientKey>) -> Option<u8> {
    if let (Clause::Param { param, values, .. }, Some(k)) = (c, patient) {
        let own = values.iter().all(|v| {
            matches!(v, Term::Reference { target_type, id: Some(id), .. }
                if target_type.as_deref().is_none_or(|t| t == "Patient") && PatientKey::for_patient_id(id) == k)
        });
        if param.kind == ParamType::Reference && own {
            return None;
        }
    }
    match c {
        Clause::Param { param, modifier, .. } => match (param.kind, modifier) {
            (_, Modifier::Not) => None,
            (ParamType::Token, Modifier::Text) => Some(7),
            (ParamType::Token | ParamType::Composite | ParamType::Uri, _) => Some(1),
            (ParamType::Reference, _) => Some(2),
            (ParamType::String, Modifier::Contains) => Some(8),
            (ParamType::String, _) => Some(3),
            (ParamType::Quantity | ParamType::Number, _) => Some(4),
            (ParamType::Date, _) => Some(6),
            _ => None,
        },
        Clause::Chain { .. } => Some(5),
        _ => None,
    }
}

fn clause_sql(b: &mut SqlBuf, subj: Subject<'_>, resource_type: &str, clause: &Clause) {
    let a = subj.alias;
    match clause {
        Clause::Id(ids) => {
            b.s(&format!("{a}.id IN ("));
            for (i, id) in ids.iter().enumerate() {
                if i > 0 {
                    b.s(", ");
                }
                b.text(id);
            }
            b.s(")");
        }
        Clause::LastUpdated(terms) => {
            b.s("(");
            for (i, t) in terms.iter().enumerate() {
                if i > 0 {
                    b.s(" OR ");
                }
                if let Term::Date { prefix, range } = t {
                    let col = format!("{a}.last_updated");
                    date_cond(b, &col, &col, *prefix, range.low, range.high);
                }
            }
            b.s(")");
        }
        Clause::Missing { param, missing } => {
            let (table, pname) = match param.kind {
                ParamType::Composite => ("idx_token", format!("{}#0", param.code)),
                k => (table_of(k), param.code.clone()),
            };
            membership(b, subj, resource_type, table, &pname, *missing, |b| {
                b.s("1=1");
            });
        }
        Clause::Param { param, modifier, values } => {
            if param.kind == ParamType::Composite {
                b.s("(");
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        b.s(" OR ");
                    }
                    composite_sql(b, subj, resource_type, param, v);
                }
                b.s(")");
                return;
            }
            let (table, pname) = match modifier {
                Modifier::Identifier => ("idx_token", format!("{}:identifier", param.code)),
                Modifier::OfType => ("idx_token", format!("{}:of-type", param.code)),
                _ => (table_of(param.kind), param.code.clone()),
            };
            let negate = *modifier == Modifier::Not;
            membership(b, subj, resource_type, table, &pname, negate, |b| {
                b.s("(");
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        b.s(" OR ");
                    }
                    term_cond(b, "x", modifier, v);
                }
                b.s(")");
                if let Modifier::Type(t) = modifier {
                    b.s(" AND x.target_type = ").text(t);
                }
            });
        }
        Clause::Chain { param, target_types, inner } => {
            membership(b, subj, resource_type, "idx_ref", &param.code, false, |b| {
                b.s("x.target_type IN (");
                for (i, t) in target_types.iter().enumerate() {
                    if i > 0 {
                        b.s(", ");
                    }
                    b.text(t);
                }
                b.s(") AND x.target_id IN (SELECT t.id FROM resources t WHERE t.deleted = 0 AND t.res_type IN (");
                for (i, t) in target_types.iter().enumerate() {
                    if i > 0 {
                        b.s(", ");
                    }
                    b.text(t);
                }
                b.s(") AND ");
                let tsubj = Subject { alias: "t", vis: subj.vis, patient: None, driver: false };
                // the inner clause was parsed against the first candidate type
                clause_sql(b, tsubj, &target_types[0], inner);
                if let Some(v) = subj.vis {
                    b.s(" AND ");
                    visibility_sql(b, "t", v, true);
                }
                b.s(")");
            });
        }
        Clause::Has { source_type, reference, inner } => {
            b.s(&format!("{a}.id IN (SELECT h.target_id FROM idx_ref h WHERE h.res_type = "));
            b.text(source_type).s(" AND ");
            param_cond(b, "h", source_type, &reference.code);
            b.s(" AND h.target_type = ").text(resource_type);
            b.s(" AND (h.patient_key, h.res_type, h.res_id) IN (SELECT s.patient_key, s.res_type, s.id FROM resources s WHERE s.deleted = 0 AND s.res_type = ");
            b.text(source_type).s(" AND ");
            clause_sql(b, Subject { alias: "s", vis: subj.vis, patient: None, driver: false }, source_type, inner);
            if let Some(v) = subj.vis {
                b.s(" AND ");
                visibility_sql(b, "s", v, true);
            }
            b.s("))");
        }
    }
}

fn composite_sql(b: &mut SqlBuf, subj: Subject<'_>, resource_type: &str, param: &fascicolo_fhir::params::SearchParam, value: &Term) {
    let Term::Composite(terms) = value else {
        b.s("1=0");
        return;
    };
    let a = subj.alias;
    if subj.driver {
        b.s(&format!("({a}.patient_key, {a}.res_type, {a}.id) IN (SELECT c0.patient_key, c0.res_type, c0.res_id FROM "));
    } else {
        b.s("EXISTS (SELECT 1 FROM ");
    }
    for (i, (_, ctype, _)) in param.components.iter().enumerate() {
        let t = table_of(*ctype);
        let hint = if subj.driver && i == 0 { String::new() } else { owner_hint(b.dialect, t) };
        if i > 0 {
            b.s(&format!(" JOIN {t} c{i}{hint} ON c{i}.patient_key = c0.patient_key AND c{i}.res_type = c0.res_type AND c{i}.res_id = c0.res_id AND c{i}.grp = c0.grp"));
        } else {
            b.s(&format!("{t} c0{hint}"));
        }
    }
    if subj.driver {
        b.s(" WHERE c0.res_type = ").text(resource_type);
        if let Some(k) = subj.patient {
            b.s(" AND c0.patient_key = ").p(SqlValue::Key(k));
        }
    } else {
        b.s(&format!(" WHERE c0.patient_key = {a}.patient_key AND c0.res_type = {a}.res_type AND c0.res_id = {a}.id"));
    }
    for (i, term) in terms.iter().enumerate() {
        b.s(" AND ");
        param_cond(b, &format!("c{i}"), resource_type, &format!("{}#{i}", param.code));
        b.s(" AND ");
        term_cond(b, &format!("c{i}"), &Modifier::None, term);
    }
    if !subj.driver {
        b.s(probe_fence(b.dialect));
    }
    b.s(")");
}

/// The SQL expression of a sort key and its "missing" sentinel.
fn sort_expr(b: &mut SqlBuf, resource_type: &str, key: &SortKey) {
    let agg = if key.descending { "MAX" } else { "MIN" };
    match (key.param.as_str(), key.kind) {
        ("_id", _) => {
            b.s("r.id");
        }
        ("_lastUpdated", _) => {
            b.s("r.last_updated");
        }
        (p, Some(kind)) => {
            let (table, col, hi, lo) = match kind {
                ParamType::String => ("idx_string", "norm", SqlValue::Text(TEXT_MAX.into()), SqlValue::Text(String::new())),
                ParamType::Date => ("idx_date", if key.descending { "hi" } else { "lo" }, SqlValue::Int(i64::MAX), SqlValue::Int(i64::MIN)),
                ParamType::Number | ParamType::Quantity => (table_of(kind), "value", SqlValue::Real(f64::MAX), SqlValue::Real(f64::MIN)),
                ParamType::Reference => ("idx_ref", "target_id", SqlValue::Text(TEXT_MAX.into()), SqlValue::Text(String::new())),
                ParamType::Uri => ("idx_uri", "value", SqlValue::Text(TEXT_MAX.into()), SqlValue::Text(String::new())),
                _ => ("idx_token", "code", SqlValue::Text(TEXT_MAX.into()), SqlValue::Text(String::new())),
            };
            b.s(&format!("COALESCE((SELECT {agg}(k.{col}) FROM {table} k WHERE k.patient_key = r.patient_key AND k.res_type = r.res_type AND k.res_id = r.id AND "));
            param_cond(b, "k", resource_type, p);
            b.s("), ");
            b.p(if key.descending { lo } else { hi });
            b.s(")");
        }
        _ => {
            b.s("r.id");
        }
    }
}

fn json_to_sql(v: &Value) -> SqlValue {
    match v {
        Value::String(s) => SqlValue::Text(s.clone()),
        Value::Number(n) if n.is_i64() => SqlValue::Int(n.as_i64().unwrap_or_default()),
        Value::Number(n) => SqlValue::Real(n.as_f64().unwrap_or_default()),
        _ => SqlValue::Null,
    }
}

fn where_sql(b: &mut SqlBuf, plan: &SearchPlan) {
    b.s(" FROM resources r WHERE r.deleted = 0");
    if let Some(t) = &plan.resource_type {
        b.s(" AND r.res_type = ").text(t);
    }
    if let Some(k) = plan.patient {
        b.s(" AND r.patient_key = ").p(SqlValue::Key(k));
    }
    let rt = plan.resource_type.as_deref().unwrap_or("Resource");
    // Pick the driving clause: with a known patient only a selective one beats scanning the
    // patient's partition; by id, the primary key drives.
    let has_id = plan.clauses.iter().any(|c| matches!(c, Clause::Id(_)));
    // With a known patient only an equality clause (token, uri, reference) may drive: it is one
    // exact lookup in the value index; anything else probes the partition's rows.
    let limit = if plan.patient.is_some() { 2 } else { 8 };
    let driver = if has_id {
        None
    } else {
        plan.clauses
            .iter()
            .enumerate()
            .filter_map(|(i, c)| clause_rank(c, plan.patient).filter(|r| *r <= limit).map(|r| (r, i)))
            .min()
            .map(|(_, i)| i)
    };
    for (i, c) in plan.clauses.iter().enumerate() {
        b.s(" AND ");
        clause_sql(b, Subject { alias: "r", vis: plan.visibility.as_ref(), patient: plan.patient, driver: driver == Some(i) }, rt, c);
    }
    if let Some(v) = &plan.visibility {
        b.s(" AND ");
        visibility_sql(b, "r", v, false);
    }
}

/// The search query: the resource columns, then one column per sort key.
pub fn search_sql(d: Dialect, plan: &SearchPlan) -> SqlBuf {
    let mut b = SqlBuf::new(d);
    b.s("SELECT ").s(RESOURCE_COLS);
    let mut keys: Vec<String> = Vec::new();
    for (i, k) in plan.sort.iter().enumerate() {
        let mut kb = SqlBuf::new(d);
        kb.params = std::mem::take(&mut b.params);
        sort_expr(&mut kb, plan.resource_type.as_deref().unwrap_or("Resource"), k);
        b.params = kb.params;
        b.s(", ").s(&kb.sql).s(&format!(" AS k{i}"));
        keys.push(kb.sql);
    }
    where_sql(&mut b, plan);
    if let Some(after) = &plan.after {
        if after.len() == plan.sort.len() + 2 {
            // (k0, .., type, id) > (v0, .., t, i) with per-key direction
            let mut cols: Vec<(String, bool)> = keys.iter().cloned().zip(plan.sort.iter().map(|k| k.descending)).collect();
            cols.push(("r.res_type".into(), false));
            cols.push(("r.id".into(), false));
            b.s(" AND (");
            for i in 0..cols.len() {
                if i > 0 {
                    b.s(" OR ");
                }
                b.s("(");
                for (j, (col, _)) in cols.iter().enumerate().take(i) {
                    b.s(col).s(" = ").p(json_to_sql(&after[j]));
                    b.s(" AND ");
                }
                let (col, desc) = &cols[i];
                b.s(col).s(if *desc { " < " } else { " > " }).p(json_to_sql(&after[i]));
                b.s(")");
            }
            b.s(")");
        }
    }
    b.s(" ORDER BY ");
    for (i, k) in plan.sort.iter().enumerate() {
        b.s(&format!("k{i}{}, ", if k.descending { " DESC" } else { "" }));
    }
    b.s("r.res_type, r.id LIMIT ").p(SqlValue::Int(plan.limit as i64));
    b
}

/// The next rows of a [`crate::ScanQuery`]: a range of the primary key, filtered.
pub fn scan_sql(d: Dialect, q: &crate::ScanQuery) -> SqlBuf {
    let mut b = SqlBuf::new(d);
    b.s("SELECT ").s(RESOURCE_COLS).s(" FROM resources r WHERE r.deleted = 0");
    if !q.types.is_empty() {
        b.s(" AND r.res_type IN (");
        for (i, t) in q.types.iter().enumerate() {
            if i > 0 {
                b.s(", ");
            }
            b.text(t);
        }
        b.s(")");
    }
    if !q.patients.is_empty() {
        b.s(" AND r.patient_key IN (");
        for (i, k) in q.patients.iter().enumerate() {
            if i > 0 {
                b.s(", ");
            }
            b.p(SqlValue::Key(*k));
        }
        b.s(")");
    }
    if q.patients_only {
        b.s(" AND r.patient_key <> ").p(SqlValue::Key(PatientKey::SHARED));
    }
    if let Some(since) = q.since {
        b.s(" AND r.last_updated > ").p(SqlValue::Int(since));
    }
    if q.deny_bits != 0 {
        b.s(" AND (r.restrict_bits & ").p(SqlValue::Int(q.deny_bits)).s(") = 0");
    }
    if let Some((k, t, id)) = &q.after {
        // a row-value comparison: both backends walk the primary key from there
        b.s(" AND (r.patient_key, r.res_type, r.id) > (").p(SqlValue::Key(*k)).s(", ").text(t).s(", ").text(id).s(")");
    }
    b.s(" ORDER BY r.patient_key, r.res_type, r.id LIMIT ").p(SqlValue::Int(q.limit as i64));
    b
}

pub fn count_sql(d: Dialect, plan: &SearchPlan) -> SqlBuf {
    let mut b = SqlBuf::new(d);
    b.s("SELECT COUNT(*)");
    where_sql(&mut b, plan);
    b
}

/// Current versions of many resources, through the locator.
pub fn read_many_sql(d: Dialect, refs: &[(String, String)]) -> SqlBuf {
    read_many_sql_with(d, refs, false)
}

/// How many resources one `read_many` statement names at most: a backend reads longer lists in
/// statements of this size (SQLite refuses an expression deeper than 1,000 terms).
pub const READ_MANY_CHUNK: usize = 200;

/// The current versions of many resources; `include_deleted` keeps deletions (as `read` does).
pub fn read_many_sql_with(d: Dialect, refs: &[(String, String)], include_deleted: bool) -> SqlBuf {
    let mut b = SqlBuf::new(d);
    let filter = if include_deleted { "" } else { "r.deleted = 0 AND " };
    b.s(&format!("SELECT {RESOURCE_COLS} FROM locator l JOIN resources r ON r.patient_key = l.patient_key AND r.res_type = l.res_type AND r.id = l.id WHERE {filter}("));
    for (i, (t, id)) in refs.iter().enumerate() {
        if i > 0 {
            b.s(" OR ");
        }
        b.s("(l.res_type = ").text(t).s(" AND l.id = ").text(id).s(")");
    }
    b.s(")");
    b
}

/// Index rows of every (non-delete) write of a commit, grouped by table, each row fully bound
/// (patient_key, res_type, res_id, param, seq, grp, values...), so they go in as multi-row inserts.
pub fn index_rows(writes: &[crate::Write]) -> std::collections::BTreeMap<&'static str, Vec<Vec<SqlValue>>> {
    let mut out: std::collections::BTreeMap<&'static str, Vec<Vec<SqlValue>>> = std::collections::BTreeMap::new();
    for w in writes.iter().filter(|w| w.method != crate::Method::Delete) {
        add_index_rows(w, &mut out);
    }
    out
}

fn add_index_rows(w: &crate::Write, out: &mut std::collections::BTreeMap<&'static str, Vec<Vec<SqlValue>>>) {
    for (seq, e) in w.index.iter().enumerate() {
        let (table, vals) = index_row(&e.value);
        let mut row = Vec::with_capacity(6 + vals.len());
        row.push(SqlValue::Key(w.patient_key));
        row.push(SqlValue::Text(w.resource_type.clone()));
        row.push(SqlValue::Text(w.id.clone()));
        row.push(SqlValue::Text(e.param.clone()));
        row.push(SqlValue::Int(seq as i64));
        row.push(SqlValue::Int(i64::from(e.group)));
        row.extend(vals);
        out.entry(table).or_default().push(row);
    }
}

/// Rows per multi-row index INSERT.
pub const INSERT_CHUNK: usize = 64;

/// Statements of the outbox, numbered for the dialect.
pub struct OutboxSql {
    pub insert: String,
    /// Params: lease-until, now, limit. Returns patient_key, id, kind, payload, attempts.
    pub claim: String,
    /// Params: now, patient_key, id.
    pub done: String,
    /// Params: next_at, error, patient_key, id.
    pub retry: String,
}

/// The statements for the dialect, built once.
pub fn outbox_sql(d: Dialect) -> &'static OutboxSql {
    static SQLITE: std::sync::OnceLock<OutboxSql> = std::sync::OnceLock::new();
    static POSTGRES: std::sync::OnceLock<OutboxSql> = std::sync::OnceLock::new();
    match d {
        Dialect::Sqlite => SQLITE.get_or_init(|| build_outbox_sql(d)),
        Dialect::Postgres => POSTGRES.get_or_init(|| build_outbox_sql(d)),
    }
}

fn build_outbox_sql(d: Dialect) -> OutboxSql {
    let p = |n| ph(d, n);
    // PostgreSQL: concurrent workers skip each other's rows; SQLite has one writer.
    let lock = if d == Dialect::Postgres { " FOR UPDATE SKIP LOCKED" } else { "" };
    OutboxSql {
        insert: format!(
            "INSERT INTO outbox (patient_key, id, kind, payload, created_at, available_at, attempts) VALUES ({}, {}, {}, {}, {}, {}, 0) \
             ON CONFLICT (patient_key, id) DO NOTHING",
            p(1),
            p(2),
            p(3),
            p(4),
            p(5),
            p(6)
        ),
        claim: format!(
            "UPDATE outbox SET available_at = {}, attempts = attempts + 1 WHERE (patient_key, id) IN \
             (SELECT patient_key, id FROM outbox WHERE done_at IS NULL AND available_at <= {} ORDER BY available_at, id LIMIT {}{lock}) \
             RETURNING patient_key, id, kind, payload, attempts",
            p(1),
            p(2),
            p(3)
        ),
        done: format!("UPDATE outbox SET done_at = {} WHERE patient_key = {} AND id = {}", p(1), p(2), p(3)),
        retry: format!(
            "UPDATE outbox SET available_at = {}, last_error = {} WHERE patient_key = {} AND id = {} AND done_at IS NULL",
            p(1),
            p(2),
            p(3),
            p(4)
        ),
    }
}

/// Statements of the sign-in records, numbered for the dialect.
pub struct AuthSql {
    /// Params: kind, id, subject, data, expires_at.
    pub upsert: String,
    pub insert_new: String,
    /// Params: kind, id, now. Returns kind, id, subject, data, expires_at.
    pub get: String,
    pub take: String,
    /// Params: kind, id.
    pub delete: String,
    /// Params: kind, subject.
    pub delete_subject: String,
    /// Params: now.
    pub purge: String,
}

pub fn auth_sql(d: Dialect) -> AuthSql {
    let p = |n| ph(d, n);
    let cols = "kind, id, subject, data, expires_at";
    let values = format!("({}, {}, {}, {}, {})", p(1), p(2), p(3), p(4), p(5));
    AuthSql {
        upsert: format!(
            "INSERT INTO auth_records ({cols}) VALUES {values} ON CONFLICT (kind, id) DO UPDATE SET subject = excluded.subject, \
             data = excluded.data, expires_at = excluded.expires_at"
        ),
        insert_new: format!("INSERT INTO auth_records ({cols}) VALUES {values} ON CONFLICT (kind, id) DO NOTHING"),
        get: format!("SELECT {cols} FROM auth_records WHERE kind = {} AND id = {} AND expires_at > {}", p(1), p(2), p(3)),
        take: format!("DELETE FROM auth_records WHERE kind = {} AND id = {} RETURNING {cols}", p(1), p(2)),
        delete: format!("DELETE FROM auth_records WHERE kind = {} AND id = {}", p(1), p(2)),
        delete_subject: format!("DELETE FROM auth_records WHERE kind = {} AND subject = {}", p(1), p(2)),
        purge: format!("DELETE FROM auth_records WHERE expires_at <= {}", p(1)),
    }
}

/// Statements of the operational state kept beside the records (job marks, seen marks,
/// submission statuses, notification claims, the readiness probe), numbered for the dialect.
pub struct StateSql {
    /// Params: job. Returns data.
    pub job_get: String,
    /// Params: job, data, now.
    pub job_put: String,
    /// Params: job, data, now; leaves an existing mark as it is.
    pub job_insert_new: String,
    /// Params: key, now. Returns seen_at.
    pub seen_get: String,
    /// Params: key, seen_at, expires_at.
    pub seen_put: String,
    /// Params: workflow, producer, body, expires_at.
    pub submission_put: String,
    /// Params: workflow, now. Returns workflow, producer, body, expires_at.
    pub submission_get: String,
    /// Params: key, message_id, expires_at. Returns the message holding the claim.
    pub claim: String,
    /// Params: data.
    pub probe_put: String,
    pub probe_delete: String,
    /// Params: now. One statement per table of expiring rows.
    pub purge: Vec<String>,
}

pub fn state_sql(d: Dialect) -> StateSql {
    let p = |n| ph(d, n);
    StateSql {
        job_get: format!("SELECT data FROM job_marks WHERE job = {}", p(1)),
        job_put: format!(
            "INSERT INTO job_marks (job, data, updated_at) VALUES ({}, {}, {}) ON CONFLICT (job) DO UPDATE SET data = excluded.data, \
             updated_at = excluded.updated_at",
            p(1),
            p(2),
            p(3)
        ),
        job_insert_new: format!(
            "INSERT INTO job_marks (job, data, updated_at) VALUES ({}, {}, {}) ON CONFLICT (job) DO NOTHING",
            p(1),
            p(2),
            p(3)
        ),
        seen_get: format!("SELECT seen_at FROM seen_marks WHERE mark_key = {} AND expires_at > {}", p(1), p(2)),
        seen_put: format!(
            "INSERT INTO seen_marks (mark_key, seen_at, expires_at) VALUES ({}, {}, {}) ON CONFLICT (mark_key) DO UPDATE SET \
             seen_at = excluded.seen_at, expires_at = excluded.expires_at",
            p(1),
            p(2),
            p(3)
        ),
        submission_put: format!(
            "INSERT INTO submission_status (workflow, producer, body, expires_at) VALUES ({}, {}, {}, {}) ON CONFLICT (workflow) \
             DO UPDATE SET producer = excluded.producer, body = excluded.body, expires_at = excluded.expires_at",
            p(1),
            p(2),
            p(3),
            p(4)
        ),
        submission_get: format!(
            "SELECT workflow, producer, body, expires_at FROM submission_status WHERE workflow = {} AND expires_at > {}",
            p(1),
            p(2)
        ),
        // the first claimer's row stays; every claimer reads back who holds it, in one statement
        claim: format!(
            "INSERT INTO notification_claims (claim_key, message_id, expires_at) VALUES ({}, {}, {}) ON CONFLICT (claim_key) \
             DO UPDATE SET message_id = notification_claims.message_id RETURNING message_id",
            p(1),
            p(2),
            p(3)
        ),
        probe_put: format!(
            "INSERT INTO readiness_probe (id, data) VALUES (1, {}) ON CONFLICT (id) DO UPDATE SET data = excluded.data",
            p(1)
        ),
        probe_delete: "DELETE FROM readiness_probe".into(),
        purge: ["seen_marks", "submission_status", "notification_claims"]
            .iter()
            .map(|t| format!("DELETE FROM {t} WHERE expires_at <= {}", p(1)))
            .collect(),
    }
}

/// Statements of the access log and of the records' facts versions.
pub struct AccessSql {
    /// Params: patient_key, recorded, id, agent, flags, content.
    pub insert: String,
    /// Params: patient_key. Moves the record's facts version on.
    pub bump: String,
    /// Params: patient_key. Returns version.
    pub version: String,
    /// Params: patient_key, id. Returns the entry's columns.
    pub by_id: String,
    /// Params: id. Returns the patient_key the locator holds for an `AuditEvent` of that id.
    pub locate: String,
}

pub const ACCESS_COLUMNS: &str = "patient_key, recorded, id, agent, flags, content";

/// The statements for the dialect, built once.
pub fn access_sql(d: Dialect) -> &'static AccessSql {
    static SQLITE: std::sync::OnceLock<AccessSql> = std::sync::OnceLock::new();
    static POSTGRES: std::sync::OnceLock<AccessSql> = std::sync::OnceLock::new();
    match d {
        Dialect::Sqlite => SQLITE.get_or_init(|| build_access_sql(d)),
        Dialect::Postgres => POSTGRES.get_or_init(|| build_access_sql(d)),
    }
}

fn build_access_sql(d: Dialect) -> AccessSql {
    let p = |n| ph(d, n);
    AccessSql {
        insert: format!("INSERT INTO access_log ({ACCESS_COLUMNS}) VALUES ({}, {}, {}, {}, {}, {})", p(1), p(2), p(3), p(4), p(5), p(6)),
        bump: format!(
            "INSERT INTO partition_facts (patient_key, version) VALUES ({}, 1) ON CONFLICT (patient_key) DO UPDATE SET version = \
             partition_facts.version + 1",
            p(1)
        ),
        version: format!("SELECT version FROM partition_facts WHERE patient_key = {}", p(1)),
        by_id: format!("SELECT {ACCESS_COLUMNS} FROM access_log WHERE patient_key = {} AND id = {}", p(1), p(2)),
        locate: format!("SELECT patient_key FROM locator WHERE res_type = 'AuditEvent' AND id = {}", p(1)),
    }
}

/// The WHERE clause of an access-log range (see [`crate::AccessQuery`]).
fn access_where(b: &mut SqlBuf, q: &crate::AccessQuery, with_cursor: bool) {
    b.s(" WHERE 1=1");
    if let Some(k) = q.patient {
        b.s(" AND patient_key = ").p(SqlValue::Key(k));
    }
    if let Some(from) = q.from {
        b.s(" AND recorded >= ").p(SqlValue::Int(from));
    }
    if let Some(to) = q.to {
        b.s(" AND recorded <= ").p(SqlValue::Int(to));
    }
    if !q.agents.is_empty() {
        b.s(" AND agent IN (");
        for (i, a) in q.agents.iter().enumerate() {
            if i > 0 {
                b.s(", ");
            }
            b.text(a);
        }
        b.s(")");
    }
    if q.flags != 0 {
        b.s(" AND (flags & ").p(SqlValue::Int(q.flags)).s(") = ").p(SqlValue::Int(q.flags));
    }
    if let (true, Some((at, id))) = (with_cursor, &q.after) {
        let (cmp, tie) = if q.oldest_first { (">", ">") } else { ("<", "<") };
        b.s(&format!(" AND (recorded {cmp} ")).p(SqlValue::Int(*at));
        b.s(" OR (recorded = ").p(SqlValue::Int(*at)).s(&format!(" AND id {tie} ")).text(id).s("))");
    }
}

/// An access-log range, ordered by `recorded` then `id` (newest first unless `oldest_first`).
pub fn access_log_sql(d: Dialect, q: &crate::AccessQuery) -> SqlBuf {
    let mut b = SqlBuf::new(d);
    b.s(&format!("SELECT {ACCESS_COLUMNS} FROM access_log"));
    access_where(&mut b, q, true);
    let dir = if q.oldest_first { "" } else { " DESC" };
    b.s(&format!(" ORDER BY recorded{dir}, id{dir} LIMIT ")).p(SqlValue::Int(q.limit as i64));
    b
}

/// How many entries an access-log range holds.
pub fn access_count_sql(d: Dialect, q: &crate::AccessQuery) -> SqlBuf {
    let mut b = SqlBuf::new(d);
    b.s("SELECT COUNT(*) FROM access_log");
    access_where(&mut b, q, false);
    b
}

/// The records whose facts version a commit moves on: every record a write touches (the one it
/// leaves included) and those of the entries that change facts; each once, in key order.
pub fn facts_touched(writes: &[crate::Write], access: &[crate::AccessEntry]) -> Vec<PatientKey> {
    let mut keys: Vec<PatientKey> = writes
        .iter()
        .flat_map(|w| std::iter::once(w.patient_key).chain(w.previous_key))
        .chain(access.iter().filter(|e| e.changes_facts).map(|e| e.patient_key))
        .filter(|k| !k.is_shared())
        .collect();
    keys.sort();
    keys.dedup();
    keys
}
