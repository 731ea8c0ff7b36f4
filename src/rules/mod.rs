//! Declarative YAML rules: classify, redact, derive and map entries to rows.
