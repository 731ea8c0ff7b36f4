//! Parsing one JSONL line into a typed-but-tolerant entry.
//!
//! The whole line is kept as a JSON document (`raw`): rules and plugins see
//! every field, including ones Claude Code adds tomorrow. The typed header
//! (`kind`, `uuid`, `session_id`, ...) is extracted from it for the pipeline's
//! own needs; any field may be missing or of an unexpected type without the
//! line being rejected. Only lines that are not a JSON object are errors.

use serde_json::Value;

/// What kind of entry a line is. Unknown types are kept by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    User,
    Assistant,
    System,
    Summary,
    Other(String),
    /// The object has no string `type` field.
    Untyped,
}

impl EntryKind {
    pub fn as_str(&self) -> &str {
        match self {
            EntryKind::User => "user",
            EntryKind::Assistant => "assistant",
            EntryKind::System => "system",
            EntryKind::Summary => "summary",
            EntryKind::Other(s) => s,
            EntryKind::Untyped => "",
        }
    }
}

/// Token usage reported on assistant entries (`message.usage`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
}

/// One block of `message.content[]`.
#[derive(Debug, Clone, PartialEq)]
pub enum Block<'a> {
    Text(&'a str),
    Thinking(&'a str),
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: &'a Value,
    },
    ToolResult {
        tool_use_id: &'a str,
        is_error: bool,
        content: &'a Value,
    },
    Image,
    Other(&'a Value),
}

/// A parsed line: the full document plus a typed view of the common header.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub raw: Value,
    pub kind: EntryKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("empty line")]
    Empty,
    #[error(
        "line is {length} bytes, over the {limit}-byte limit (kept truncated in the dead letter)"
    )]
    TooLong { length: u64, limit: u64 },
    #[error("invalid UTF-8 at byte {at}")]
    InvalidUtf8 { at: usize },
    #[error("malformed JSON at column {column}: {message}")]
    Json { column: usize, message: String },
    #[error("JSON value is {found}, expected an object")]
    NotAnObject { found: &'static str },
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parse one line (without its newline).
pub fn parse_line(bytes: &[u8]) -> Result<Entry, ParseError> {
    let trimmed = trim_ascii(bytes);
    if trimmed.is_empty() {
        return Err(ParseError::Empty);
    }
    // Reject invalid UTF-8 up front with a precise position: serde_json would
    // also fail, but with a less useful message.
    let text = std::str::from_utf8(trimmed).map_err(|e| ParseError::InvalidUtf8 {
        at: e.valid_up_to(),
    })?;
    // From the checked `str`: serde_json does not validate the UTF-8 again.
    let raw: Value = serde_json::from_str(text).map_err(|e| ParseError::Json {
        column: e.column(),
        message: strip_position(&e.to_string()),
    })?;
    if !raw.is_object() {
        return Err(ParseError::NotAnObject {
            found: type_name(&raw),
        });
    }
    let kind = match raw.get("type").and_then(Value::as_str) {
        Some("user") => EntryKind::User,
        Some("assistant") => EntryKind::Assistant,
        Some("system") => EntryKind::System,
        Some("summary") => EntryKind::Summary,
        Some(other) => EntryKind::Other(other.to_string()),
        None => EntryKind::Untyped,
    };
    Ok(Entry { raw, kind })
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &b[start..end]
}

fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

impl Entry {
    fn str_at(&self, key: &str) -> Option<&str> {
        self.raw.get(key).and_then(Value::as_str)
    }
    pub fn uuid(&self) -> Option<&str> {
        self.str_at("uuid")
    }
    pub fn parent_uuid(&self) -> Option<&str> {
        self.str_at("parentUuid")
    }
    pub fn session_id(&self) -> Option<&str> {
        self.str_at("sessionId")
    }
    pub fn timestamp(&self) -> Option<&str> {
        self.str_at("timestamp")
    }
    pub fn cwd(&self) -> Option<&str> {
        self.str_at("cwd")
    }
    pub fn git_branch(&self) -> Option<&str> {
        self.str_at("gitBranch")
    }
    pub fn version(&self) -> Option<&str> {
        self.str_at("version")
    }
    pub fn user_type(&self) -> Option<&str> {
        self.str_at("userType")
    }
    pub fn request_id(&self) -> Option<&str> {
        self.str_at("requestId")
    }
    pub fn is_sidechain(&self) -> bool {
        self.raw
            .get("isSidechain")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }
    pub fn message(&self) -> Option<&Value> {
        self.raw.get("message").filter(|m| m.is_object())
    }
    pub fn role(&self) -> Option<&str> {
        self.message()?.get("role")?.as_str()
    }
    pub fn model(&self) -> Option<&str> {
        self.message()?.get("model")?.as_str()
    }
    pub fn tool_use_result(&self) -> Option<&Value> {
        self.raw.get("toolUseResult")
    }

    /// `message.usage`, with missing or non-numeric counters read as 0.
    pub fn usage(&self) -> Option<Usage> {
        let u = self.message()?.get("usage")?.as_object()?;
        let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
        Some(Usage {
            input_tokens: n("input_tokens"),
            output_tokens: n("output_tokens"),
            cache_creation_input_tokens: n("cache_creation_input_tokens"),
            cache_read_input_tokens: n("cache_read_input_tokens"),
        })
    }

    /// Content blocks; a plain-string `message.content` is one text block.
    pub fn blocks(&self) -> Vec<Block<'_>> {
        let Some(content) = self.message().and_then(|m| m.get("content")) else {
            return Vec::new();
        };
        match content {
            Value::String(s) => vec![Block::Text(s)],
            Value::Array(items) => items.iter().map(block_of).collect(),
            _ => Vec::new(),
        }
    }
}

fn block_of(v: &Value) -> Block<'_> {
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("");
    match v.get("type").and_then(Value::as_str) {
        Some("text") => Block::Text(s("text")),
        Some("thinking") => Block::Thinking(s("thinking")),
        Some("tool_use") => Block::ToolUse {
            id: s("id"),
            name: s("name"),
            input: v.get("input").unwrap_or(&Value::Null),
        },
        Some("tool_result") => Block::ToolResult {
            tool_use_id: s("tool_use_id"),
            is_error: v.get("is_error").and_then(Value::as_bool).unwrap_or(false),
            content: v.get("content").unwrap_or(&Value::Null),
        },
        Some("image") => Block::Image,
        _ => Block::Other(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn assistant_entry_with_blocks_and_usage() {
        let line = br#"{"type":"assistant","uuid":"a1","parentUuid":"u1","sessionId":"s","timestamp":"2026-01-01T00:00:00Z","isSidechain":true,"requestId":"req_1","message":{"role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"thinking","thinking":"hm"},{"type":"text","text":"hi"},{"type":"tool_use","id":"toolu_1","name":"Read","input":{"file_path":"/a.rs"}}],"usage":{"input_tokens":10,"output_tokens":5,"cache_read_input_tokens":7}},"brandNewField":{"x":1}}"#;
        let e = parse_line(line).unwrap();
        assert_eq!(e.kind, EntryKind::Assistant);
        assert_eq!(e.uuid(), Some("a1"));
        assert_eq!(e.parent_uuid(), Some("u1"));
        assert!(e.is_sidechain());
        assert_eq!(e.model(), Some("claude-sonnet-4-5"));
        assert_eq!(e.request_id(), Some("req_1"));
        let u = e.usage().unwrap();
        assert_eq!(
            (u.input_tokens, u.output_tokens, u.cache_read_input_tokens),
            (10, 5, 7)
        );
        let b = e.blocks();
        assert_eq!(b.len(), 3);
        assert!(matches!(b[2], Block::ToolUse { name: "Read", .. }));
        // unknown fields are kept
        assert_eq!(e.raw["brandNewField"]["x"], 1);
    }

    #[test]
    fn tolerant_of_odd_types_and_unknown_kinds() {
        let e = parse_line(
            br#"{"type":"file-history-snapshot","uuid":5,"message":"str","isSidechain":"yes"}"#,
        )
        .unwrap();
        assert_eq!(e.kind, EntryKind::Other("file-history-snapshot".into()));
        assert_eq!(e.uuid(), None);
        assert!(!e.is_sidechain());
        assert!(e.blocks().is_empty());
        assert_eq!(parse_line(b"{}").unwrap().kind, EntryKind::Untyped);
        let e =
            parse_line(br#"{"type":"user","message":{"role":"user","content":"plain"}}"#).unwrap();
        assert_eq!(e.blocks(), vec![Block::Text("plain")]);
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert_eq!(parse_line(b"   "), Err(ParseError::Empty));
        assert!(matches!(
            parse_line(b"{\"a\":"),
            Err(ParseError::Json { .. })
        ));
        assert_eq!(
            parse_line(b"[1,2]"),
            Err(ParseError::NotAnObject { found: "an array" })
        );
        assert_eq!(
            parse_line(b"{\"a\":\"\xff\"}"),
            Err(ParseError::InvalidUtf8 { at: 6 })
        );
        let msg = parse_line(b"{\"a\" 1}").unwrap_err().to_string();
        assert!(msg.starts_with("malformed JSON at column"), "{msg}");
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_line(&bytes);
        }

        #[test]
        fn any_json_object_parses_and_keeps_fields(
            keys in proptest::collection::vec("[a-zA-Z]{1,8}", 0..8),
            vals in proptest::collection::vec(any::<i64>(), 0..8),
        ) {
            let mut m = serde_json::Map::new();
            for (k, v) in keys.iter().zip(vals.iter()) {
                m.insert(k.clone(), Value::from(*v));
            }
            let text = serde_json::to_vec(&Value::Object(m.clone())).unwrap();
            let e = parse_line(&text).unwrap();
            prop_assert_eq!(e.raw, Value::Object(m));
        }
    }
}
