//! Tokens of the Service Bus SQL filter language, each with its 1-based character position.

use super::SqlError;

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// A regular identifier or keyword (keywords are recognised by the parser, case-insensitively).
    Word(String),
    /// `[name]` or `"name"`: always a property name, never a keyword.
    Delimited(String),
    Str(String),
    Int(i64),
    Num(f64),
    /// `=`, `<>`, `!=`, `>`, `>=`, `<`, `<=`, `+`, `-`, `*`, `/`, `%`.
    Op(&'static str),
    LParen,
    RParen,
    Comma,
    Dot,
    Semi,
    Eof,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub tok: Tok,
    /// 1-based character position of the token's first character.
    pub pos: usize,
}

pub fn syntax(pos: usize, reason: impl Into<String>) -> SqlError {
    SqlError::Syntax {
        position: pos,
        reason: reason.into(),
    }
}

/// Split `text` into tokens, ending with [`Tok::Eof`].
pub fn tokenize(text: &str) -> Result<Vec<Token>, SqlError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let pos = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let single = |tok: Tok, len: usize, out: &mut Vec<Token>| {
            out.push(Token { tok, pos });
            len
        };
        let next = chars.get(i + 1).copied();
        i += match c {
            '(' => single(Tok::LParen, 1, &mut out),
            ')' => single(Tok::RParen, 1, &mut out),
            ',' => single(Tok::Comma, 1, &mut out),
            ';' => single(Tok::Semi, 1, &mut out),
            '=' => single(Tok::Op("="), 1, &mut out),
            '+' => single(Tok::Op("+"), 1, &mut out),
            '-' => single(Tok::Op("-"), 1, &mut out),
            '*' => single(Tok::Op("*"), 1, &mut out),
            '/' => single(Tok::Op("/"), 1, &mut out),
            '%' => single(Tok::Op("%"), 1, &mut out),
            '<' if next == Some('>') => single(Tok::Op("<>"), 2, &mut out),
            '<' if next == Some('=') => single(Tok::Op("<="), 2, &mut out),
            '<' => single(Tok::Op("<"), 1, &mut out),
            '>' if next == Some('=') => single(Tok::Op(">="), 2, &mut out),
            '>' => single(Tok::Op(">"), 1, &mut out),
            '!' if next == Some('=') => single(Tok::Op("!="), 2, &mut out),
            '.' if !next.is_some_and(|n| n.is_ascii_digit()) => single(Tok::Dot, 1, &mut out),
            '\'' => {
                let (s, len) = quoted(&chars[i..], '\'', '\'', pos, "string")?;
                single(Tok::Str(s), len, &mut out)
            }
            '"' => {
                let (s, len) = quoted(&chars[i..], '"', '"', pos, "quoted identifier")?;
                single(Tok::Delimited(s), len, &mut out)
            }
            '[' => {
                let (s, len) = quoted(&chars[i..], '[', ']', pos, "delimited identifier")?;
                single(Tok::Delimited(s), len, &mut out)
            }
            '@' => {
                return Err(syntax(
                    pos,
                    "SQL parameters (@name) are not supported: their values cannot be sent with an AMQP rule; write the value into the expression",
                ));
            }
            c if c.is_ascii_digit() || c == '.' => {
                let (tok, len) = number(&chars[i..], pos)?;
                single(tok, len, &mut out)
            }
            c if c.is_alphabetic() || c == '_' => {
                let len = chars[i..]
                    .iter()
                    .take_while(|c| c.is_alphanumeric() || **c == '_')
                    .count();
                let word: String = chars[i..i + len].iter().collect();
                single(Tok::Word(word), len, &mut out)
            }
            other => return Err(syntax(pos, format!("unexpected character '{other}'"))),
        };
    }
    out.push(Token {
        tok: Tok::Eof,
        pos: chars.len() + 1,
    });
    Ok(out)
}

/// A quoted run from `open` to `close`, where a doubled `close` stands for one. Returns the content
/// and the number of characters consumed.
fn quoted(
    chars: &[char],
    open: char,
    close: char,
    pos: usize,
    what: &str,
) -> Result<(String, usize), SqlError> {
    debug_assert_eq!(chars.first(), Some(&open));
    let mut s = String::new();
    let mut i = 1;
    loop {
        match chars.get(i) {
            None => {
                return Err(syntax(
                    pos,
                    format!("unterminated {what}: no closing {close}"),
                ));
            }
            Some(&c) if c == close => {
                if chars.get(i + 1) == Some(&close) {
                    s.push(close);
                    i += 2;
                } else {
                    i += 1;
                    break;
                }
            }
            Some(&c) => {
                s.push(c);
                i += 1;
            }
        }
    }
    if s.is_empty() && open != '\'' {
        return Err(syntax(pos, format!("empty {what}")));
    }
    Ok((s, i))
}

/// `123` (Int64), `1.5` / `.5` / `2.` (double), `101.5E5` / `1e-7` (double).
fn number(chars: &[char], pos: usize) -> Result<(Tok, usize), SqlError> {
    let digits = |from: usize| {
        chars[from..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count()
    };
    let mut i = digits(0);
    let mut exact = true;
    if chars.get(i) == Some(&'.') {
        exact = false;
        i += 1;
        i += digits(i);
    }
    if matches!(chars.get(i), Some('e' | 'E')) {
        let mut j = i + 1;
        if matches!(chars.get(j), Some('+' | '-')) {
            j += 1;
        }
        let exp = digits(j);
        if exp == 0 {
            return Err(syntax(
                pos,
                "the exponent of a number needs digits, as in 1.5E3",
            ));
        }
        exact = false;
        i = j + exp;
    }
    if chars
        .get(i)
        .is_some_and(|c| c.is_alphanumeric() || *c == '_')
    {
        return Err(syntax(pos + i, "a number is followed directly by a letter"));
    }
    let text: String = chars[..i].iter().collect();
    if exact {
        let n: i64 = text
            .parse()
            .map_err(|_| syntax(pos, format!("the integer {text} does not fit in 64 bits")))?;
        Ok((Tok::Int(n), i))
    } else {
        match text.parse::<f64>() {
            Ok(f) if f.is_finite() && text != "." => Ok((Tok::Num(f), i)),
            _ => Err(syntax(pos, format!("{text} is not a valid number"))),
        }
    }
}
