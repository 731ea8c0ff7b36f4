//! The unit the rule engine hands to the sink: a named table and its columns.
//!
//! Rows are dynamic on purpose: which tables exist and which columns they get
//! is decided by the YAML rule pack and by plugins, not by Rust structs, so a
//! format change is a rules edit rather than a recompile.
//!
//! Columns are plain vectors of names and of values, not a hash map: a row
//! has a few dozen columns at most, is built once and read once in order, and
//! the rule engine's table and column names are interned when the rules load
//! ([`Name::interned`]), so building a row costs two small allocations, no
//! hashing and no reference counting.

use rustc_hash::FxHashSet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use std::fmt;
use std::sync::{Arc, Mutex};

/// A table or column name. The rule pack's names are interned for the life
/// of the process (a few hundred short strings, however often rules reload),
/// so a row copies a pointer per column: shared `Arc`s cost an atomic
/// increment and decrement per column of every row (the increment alone
/// was ~2.4 % of the router's samples in perf).
/// Names made at run time (plugin rows, spooled batches) own their text, so
/// no input can grow the interned set.
#[derive(Clone)]
pub enum Name {
    Interned(&'static str),
    Owned(Arc<str>),
}

impl Name {
    /// The one process-wide copy of `name`.
    pub fn interned(name: &str) -> Name {
        static NAMES: Mutex<Option<FxHashSet<&'static str>>> = Mutex::new(None);
        let mut names = NAMES.lock().unwrap_or_else(|p| p.into_inner());
        let names = names.get_or_insert_with(FxHashSet::default);
        if let Some(&n) = names.get(name) {
            return Name::Interned(n);
        }
        let n: &'static str = Box::leak(name.into());
        names.insert(n);
        Name::Interned(n)
    }

    pub fn as_str(&self) -> &str {
        match self {
            Name::Interned(s) => s,
            Name::Owned(s) => s,
        }
    }
}

impl std::ops::Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Name {}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Name {
        Name::Owned(Arc::from(s))
    }
}

impl From<String> for Name {
    fn from(s: String) -> Name {
        Name::Owned(Arc::from(s))
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Name::from)
    }
}

/// Column name → JSON value, in the order the rule produced them; names unique.
///
/// Names and values are two vectors rather than one of pairs: a row of the
/// messages table (30 columns) then makes two allocations under 1 KiB, which
/// glibc serves from its per-thread cache, instead of one of 1.7 KiB that
/// takes its slow path (1,360 instructions per row, 4 % of the router).
#[derive(Debug, Clone, Default)]
pub struct Columns {
    names: Vec<Name>,
    values: Vec<Value>,
}

impl Columns {
    pub fn new() -> Self {
        Columns::default()
    }

    pub fn with_capacity(n: usize) -> Self {
        Columns {
            names: Vec::with_capacity(n),
            values: Vec::with_capacity(n),
        }
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|k| &**k == name)
    }

    /// Set `name` to `value` (replacing an earlier value of the same name in place).
    pub fn insert(&mut self, name: impl Into<Name>, value: Value) -> Option<Value> {
        let name = name.into();
        match self.position(&name) {
            Some(i) => Some(std::mem::replace(&mut self.values[i], value)),
            None => {
                self.push_unique(name, value);
                None
            }
        }
    }

    /// Append a column the caller knows is not there yet (the rule compiler
    /// rejects duplicate column names), without the uniqueness scan.
    pub(crate) fn push_unique(&mut self, name: Name, value: Value) {
        debug_assert!(self.get(&name).is_none(), "duplicate column {name}");
        self.names.push(name);
        self.values.push(value);
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.position(name).map(|i| &self.values[i])
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut Value> {
        self.position(name).map(|i| &mut self.values[i])
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Value> {
        self.values.iter_mut()
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.position(name).is_some()
    }

    pub fn iter(&self) -> ColumnIter<'_> {
        self.names.iter().zip(&self.values).map(|(k, v)| (&**k, v))
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// The columns in order, as (name, value).
pub type ColumnIter<'a> = std::iter::Map<
    std::iter::Zip<std::slice::Iter<'a, Name>, std::slice::Iter<'a, Value>>,
    fn((&'a Name, &'a Value)) -> (&'a str, &'a Value),
>;

/// Equal when they hold the same columns, whatever their order (like a map).
impl PartialEq for Columns {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

impl std::ops::Index<&str> for Columns {
    type Output = Value;
    /// Like `serde_json::Map`: panics when the column is missing (tests).
    fn index(&self, name: &str) -> &Value {
        self.get(name)
            .unwrap_or_else(|| panic!("no column `{name}` in the row"))
    }
}

impl<'a> IntoIterator for &'a Columns {
    type Item = (&'a str, &'a Value);
    type IntoIter = ColumnIter<'a>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl From<serde_json::Map<String, Value>> for Columns {
    fn from(m: serde_json::Map<String, Value>) -> Self {
        let (names, values) = m.into_iter().map(|(k, v)| (Name::from(k), v)).unzip();
        Columns { names, values }
    }
}

impl From<Columns> for serde_json::Map<String, Value> {
    fn from(c: Columns) -> Self {
        let names = c.names.into_iter().map(|k| k.to_string());
        names.zip(c.values).collect()
    }
}

impl Serialize for Columns {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

/// From a JSON object (plugin output, spooled batches of older versions).
impl<'de> Deserialize<'de> for Columns {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde_json::Map::<String, Value>::deserialize(d).map(Columns::from)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub table: Name,
    pub columns: Columns,
}

impl Row {
    pub fn new(table: impl Into<Name>) -> Self {
        Row {
            table: table.into(),
            columns: Columns::new(),
        }
    }

    pub fn with(mut self, column: impl Into<Name>, value: impl Into<Value>) -> Self {
        self.columns.insert(column, value.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_keep_order_replace_in_place_and_round_trip() {
        let r = Row::new("t").with("b", 1).with("a", 2).with("b", 3);
        let names: Vec<&str> = r.columns.iter().map(|(k, _)| k).collect();
        assert_eq!(names, ["b", "a"]);
        assert_eq!(r.columns["b"], 3);
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(text, r#"{"table":"t","columns":{"b":3,"a":2}}"#);
        let back: Row = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
        let swapped = Row::new("t").with("a", 2).with("b", 3);
        assert_eq!(swapped, r, "equality ignores column order, like a map");
        assert_ne!(Row::new("t").with("a", json!(2)), r);
    }

    #[test]
    fn interned_names_are_one_copy_and_equal_owned_ones() {
        let (a, b) = (Name::interned("col_x"), Name::interned("col_x"));
        match (&a, &b) {
            (Name::Interned(x), Name::Interned(y)) => assert!(std::ptr::eq(*x, *y)),
            _ => panic!("not interned"),
        }
        assert_eq!(a, Name::from("col_x"));
        assert_eq!(a, "col_x");
        let r = Row::new(Name::interned("t")).with(Name::interned("b"), 1);
        assert_eq!(r, Row::new("t").with("b", 1));
    }
}
