//! Search across all sessions: prompts, replies and tool results
//! (`claude_messages.content`) and tool inputs (`claude_tool_usage.parameters`),
//! through ClickHouse's full-text (`text`) indexes on the lowered columns
//! (the `content_text` / `parameters_text` indexes of schema/001 and 002; migration 4 adds them to older stores). A hit needs every word of the query
//! (`hasAllTokens`); the snippet around the first word comes back both as
//! plain text and as escaped HTML with the words marked.

use super::{echo, filters, rows_with, ApiError, ApiResult, ApiState, Req, SCOPE, TS_RANGE};
use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

const PARAMS: &[&str] = &["q", "from", "to", "project", "user", "host", "limit"];
/// Characters of context either side of the first match.
const CONTEXT: u32 = 90;

/// The query's words as the index splits them (`splitByNonAlpha`: runs of
/// ASCII letters and digits; other bytes separate), lowered, at most 16.
pub(super) fn words(q: &str) -> Result<Vec<String>, String> {
    if q.len() > 200 || q.chars().any(char::is_control) {
        return Err("`q` must be at most 200 bytes without control characters".into());
    }
    let mut w: Vec<String> = q
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    w.dedup();
    if w.is_empty() {
        return Err("`q` needs at least one word (letters or digits)".into());
    }
    w.truncate(16);
    Ok(w)
}

/// One query for both sources: the matching rows of each (the index narrows
/// to the granules holding every word), newest first, cut to `limit`.
fn sql() -> String {
    let snippet = |col: &str| {
        format!(
            "substringUTF8({col}, greatest(1, toInt64(positionCaseInsensitiveUTF8({col}, {{w0:String}})) - {CONTEXT}), {})",
            CONTEXT * 2 + 60
        )
    };
    format!(
        "SELECT * FROM (
           SELECT 'message' AS source, project, session_id, uuid, toString(timestamp) AS time,
                  message_kind AS kind, {msg} AS snippet
           FROM claude_messages
           WHERE hasAllTokens(lower(content), {{words:Array(String)}}) AND {TS_RANGE} AND {SCOPE}
           ORDER BY timestamp DESC LIMIT {{lim:UInt32}}
           UNION ALL
           SELECT 'tool_input' AS source, project, session_id, message_uuid AS uuid, toString(timestamp) AS time,
                  tool_name AS kind, {tool} AS snippet
           FROM claude_tool_usage
           WHERE tool_name != '' AND hasAllTokens(lower(parameters), {{words:Array(String)}}) AND {TS_RANGE} AND {SCOPE}
           ORDER BY timestamp DESC LIMIT {{lim:UInt32}})
         ORDER BY time DESC, source, uuid LIMIT {{lim:UInt32}}",
        msg = snippet("content"),
        tool = snippet("parameters"),
    )
}

pub(super) async fn search(State(s): State<ApiState>, req: Req) -> ApiResult {
    let f = filters(&req, PARAMS, 50)?;
    let q = req.q.get("q").map(|s| s.trim()).unwrap_or_default();
    let words = words(q).map_err(ApiError::BadRequest)?;
    let bound = [
        ("words", Value::from(words.clone())),
        ("w0", Value::from(words[0].clone())),
    ];
    let mut hits = rows_with(&s, &sql(), &f, bound).await?;
    for h in &mut hits {
        let snippet = h.get("snippet").and_then(Value::as_str).unwrap_or_default();
        let html = highlight(snippet, &words);
        h.insert("snippet_html".into(), Value::from(html));
    }
    Ok(Json(
        json!({"filters": echo(&f), "q": q, "words": words, "hits": hits}),
    ))
}

/// `text` as HTML: every character escaped, each case-insensitive occurrence
/// of a word wrapped in `<mark>` (matched on the raw text, so an entity is
/// never split).
pub(super) fn highlight(text: &str, words: &[String]) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len() + 32);
    let mut i = 0;
    while i < text.len() {
        let hit = words
            .iter()
            .filter(|w| lower[i..].starts_with(w.as_str()))
            .map(String::len)
            .max();
        let step = match hit {
            Some(n) => {
                out.push_str("<mark>");
                escape_into(&text[i..i + n], &mut out);
                out.push_str("</mark>");
                n
            }
            None => {
                let c = text[i..].chars().next().map_or(1, char::len_utf8);
                escape_into(&text[i..i + c], &mut out);
                c
            }
        };
        i += step;
    }
    out
}

pub(super) fn escape_into(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_like_the_index() {
        assert_eq!(
            words("Fix the  parse_error!").unwrap(),
            ["fix", "the", "parse", "error"]
        );
        assert!(words("  --  ").is_err());
        assert!(words("a\u{0}b").is_err());
        assert!(words(&"x".repeat(201)).is_err());
    }

    #[test]
    fn highlight_escapes_everything_and_marks_words() {
        let w = vec!["script".to_string(), "amp".to_string()];
        let h = highlight("<Script>alert('x') & amp</script>", &w);
        assert_eq!(
            h,
            "&lt;<mark>Script</mark>&gt;alert(&#39;x&#39;) &amp; <mark>amp</mark>&lt;/<mark>script</mark>&gt;"
        );
        assert_eq!(
            highlight("héllo wörld", &["w".into()]),
            "héllo <mark>w</mark>örld"
        );
    }
}
