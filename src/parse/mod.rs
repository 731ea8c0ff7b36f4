//! Parsing one JSONL line into a typed-but-tolerant entry.
