//! Tokens of an expression, with their byte column (for error messages).

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Name(String),
    Var(String),
    Str(String),
    Num(f64, bool),
    Op(&'static str),
    LParen,
    RParen,
    LBrack,
    RBrack,
    Comma,
    Dot,
}

type LResult<T> = Result<T, (String, usize)>;

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

pub(super) fn lex(src: &str) -> LResult<Vec<(Tok, usize)>> {
    let b = src.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let c = b[i];
        let start = i;
        let (tok, end) = if c.is_ascii_whitespace() {
            i += 1;
            continue;
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let end = word_end(b, i);
            (Tok::Name(src[start..end].to_string()), end)
        } else if c == b'$' {
            let end = word_end(b, i + 1);
            if end == start + 1 {
                return Err(("`$` must be followed by a variable name".into(), start));
            }
            (Tok::Var(src[start + 1..end].to_string()), end)
        } else if c.is_ascii_digit() {
            number(src, start)?
        } else if c == b'"' || c == b'\'' {
            string(src, start)?
        } else {
            operator(src, start)?
        };
        out.push((tok, start));
        i = end;
    }
    Ok(out)
}

fn word_end(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && is_word(b[i]) {
        i += 1;
    }
    i
}

/// An integer or a decimal number starting at `start`.
fn number(src: &str, start: usize) -> LResult<(Tok, usize)> {
    let b = src.as_bytes();
    let digits = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        i
    };
    let mut i = digits(start);
    let mut is_int = true;
    if i + 1 < b.len() && b[i] == b'.' && b[i + 1].is_ascii_digit() {
        is_int = false;
        i = digits(i + 1);
    }
    let n: f64 = src[start..i]
        .parse()
        .map_err(|_| ("bad number".to_string(), start))?;
    Ok((Tok::Num(n, is_int), i))
}

/// A quoted string starting at `start` (its quote character ends it).
fn string(src: &str, start: usize) -> LResult<(Tok, usize)> {
    let b = src.as_bytes();
    let quote = b[start];
    let mut i = start + 1;
    let mut s = String::new();
    loop {
        if i >= b.len() {
            return Err(("unterminated string".into(), start));
        }
        let ch = src[i..].chars().next().unwrap_or('\0');
        if b[i] == quote {
            return Ok((Tok::Str(s), i + 1));
        }
        if b[i] == b'\\' && i + 1 < b.len() {
            let next = src[i + 1..].chars().next().unwrap_or('\0');
            // Only quotes and backslashes are escapes: regexes keep their `\d`.
            if next == quote as char || next == '\\' {
                s.push(next);
                i += 1 + next.len_utf8();
                continue;
            }
        }
        s.push(ch);
        i += ch.len_utf8();
    }
}

/// A one- or two-character operator or bracket at `start`.
fn operator(src: &str, start: usize) -> LResult<(Tok, usize)> {
    let two = src.get(start..start + 2).unwrap_or("");
    for op in ["==", "!=", "<=", ">=", "&&", "||", "=~"] {
        if two == op {
            return Ok((Tok::Op(op), start + 2));
        }
    }
    let tok = match src.as_bytes()[start] {
        b'(' => Tok::LParen,
        b')' => Tok::RParen,
        b'[' => Tok::LBrack,
        b']' => Tok::RBrack,
        b',' => Tok::Comma,
        b'.' => Tok::Dot,
        b'<' => Tok::Op("<"),
        b'>' => Tok::Op(">"),
        b'!' => Tok::Op("!"),
        b'+' => Tok::Op("+"),
        b'-' => Tok::Op("-"),
        b'*' => Tok::Op("*"),
        b'/' => Tok::Op("/"),
        _ => {
            let ch = src[start..].chars().next().unwrap_or('?');
            return Err((format!("unexpected character `{ch}`"), start));
        }
    };
    Ok((tok, start + 1))
}
