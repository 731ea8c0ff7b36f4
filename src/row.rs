//! The unit the rule engine hands to the sink: a named table and its columns.
//!
//! Rows are dynamic on purpose: which tables exist and which columns they get
//! is decided by the YAML rule pack and by plugins, not by Rust structs, so a
//! format change is a rules edit rather than a recompile.

use serde::{Deserialize, Serialize};

/// Column name → JSON value, in the order the rule produced them.
pub type Columns = serde_json::Map<String, serde_json::Value>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub table: String,
    pub columns: Columns,
}

impl Row {
    pub fn new(table: impl Into<String>) -> Self {
        Row {
            table: table.into(),
            columns: Columns::new(),
        }
    }

    pub fn with(mut self, column: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.columns.insert(column.into(), value.into());
        self
    }
}
