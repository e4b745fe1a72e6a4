//! Evaluation over a [`MessageView`] with SQL three-valued logic: NULL is "unknown", a missing user
//! property is unknown, and only a TRUE result selects a message. Type mismatches (a string compared
//! with a number) are unknown too, as Service Bus does no string↔number coercion. Only what cannot be
//! computed at all is an error: integer division by zero or overflow, a LIKE pattern or ESCAPE that is
//! not a (one-character) string, a `property()` name that is not a string.

use std::borrow::Cow;
use std::cmp::Ordering;

use uuid::Uuid;

use super::EvalError;
use super::ast::{BinaryOp, Expr, Literal, Property, UnaryOp};
use crate::filter::{FilterValue, MessageView};

/// A value during evaluation; strings borrow from the tree or the message where they can.
#[derive(Debug, Clone, PartialEq)]
pub enum V<'a> {
    Null,
    Bool(bool),
    Long(i64),
    Double(f64),
    Str(Cow<'a, str>),
    Timestamp(i64),
    Uuid(Uuid),
    Opaque,
}

impl<'a> V<'a> {
    fn of(value: &'a FilterValue) -> V<'a> {
        match value {
            FilterValue::Null => V::Null,
            FilterValue::Bool(b) => V::Bool(*b),
            FilterValue::Long(n) => V::Long(*n),
            FilterValue::Double(d) => V::Double(*d),
            FilterValue::String(s) => V::Str(Cow::Borrowed(s)),
            FilterValue::Timestamp(t) => V::Timestamp(*t),
            FilterValue::Uuid(u) => V::Uuid(*u),
            FilterValue::Opaque => V::Opaque,
        }
    }

    pub fn into_value(self) -> FilterValue {
        match self {
            V::Null => FilterValue::Null,
            V::Bool(b) => FilterValue::Bool(b),
            V::Long(n) => FilterValue::Long(n),
            V::Double(d) => FilterValue::Double(d),
            V::Str(s) => FilterValue::String(s.into_owned()),
            V::Timestamp(t) => FilterValue::Timestamp(t),
            V::Uuid(u) => FilterValue::Uuid(u),
            V::Opaque => FilterValue::Opaque,
        }
    }

    /// The three-valued truth of a predicate result: `None` is unknown (NULL or not a boolean).
    fn truth(&self) -> Option<bool> {
        match self {
            V::Bool(b) => Some(*b),
            _ => None,
        }
    }

    fn text(&self) -> Option<Cow<'_, str>> {
        Some(match self {
            V::Str(s) => Cow::Borrowed(s.as_ref()),
            V::Long(n) => Cow::Owned(n.to_string()),
            V::Double(d) => Cow::Owned(d.to_string()),
            V::Bool(b) => Cow::Borrowed(if *b { "True" } else { "False" }),
            V::Uuid(u) => Cow::Owned(u.to_string()),
            V::Timestamp(_) | V::Null | V::Opaque => return None,
        })
    }
}

fn tri(v: Option<bool>) -> V<'static> {
    v.map_or(V::Null, V::Bool)
}

fn literal(l: &Literal) -> V<'_> {
    match l {
        Literal::Null => V::Null,
        Literal::Bool(b) => V::Bool(*b),
        Literal::Long(n) => V::Long(*n),
        Literal::Double(d) => V::Double(*d),
        Literal::String(s) => V::Str(Cow::Borrowed(s)),
    }
}

pub fn property<'a>(p: &Property, m: &'a MessageView) -> V<'a> {
    match p {
        Property::Sys(s) => V::of(m.sys(*s)),
        Property::User { key, .. } => m.user_lower(key).map_or(V::Null, V::of),
    }
}

fn err(reason: impl Into<String>) -> EvalError {
    EvalError(reason.into())
}

pub fn eval<'a>(e: &'a Expr, m: &'a MessageView) -> Result<V<'a>, EvalError> {
    Ok(match e {
        Expr::Literal(l) => literal(l),
        Expr::Property(p) => property(p, m),
        Expr::NewId => V::Uuid(Uuid::new_v4()),
        Expr::PropertyOf(name) => match eval(name, m)? {
            V::Null => V::Null,
            V::Str(n) => m.user(&n).map_or(V::Null, V::of),
            other => {
                return Err(err(format!(
                    "property() needs a string name, got {}",
                    other.into_value()
                )));
            }
        },
        Expr::Unary(op, inner) => match (op, eval(inner, m)?) {
            (UnaryOp::Plus, v @ (V::Long(_) | V::Double(_))) => v,
            (UnaryOp::Neg, V::Long(n)) => V::Long(
                n.checked_neg()
                    .ok_or_else(|| err("arithmetic overflow in a negation"))?,
            ),
            (UnaryOp::Neg, V::Double(d)) => V::Double(-d),
            _ => V::Null,
        },
        Expr::Not(inner) => tri(eval(inner, m)?.truth().map(|b| !b)),
        Expr::Binary(BinaryOp::And, l, r) => match eval(l, m)?.truth() {
            Some(false) => V::Bool(false),
            left => match (left, eval(r, m)?.truth()) {
                (_, Some(false)) => V::Bool(false),
                (Some(true), Some(true)) => V::Bool(true),
                _ => V::Null,
            },
        },
        Expr::Binary(BinaryOp::Or, l, r) => match eval(l, m)?.truth() {
            Some(true) => V::Bool(true),
            left => match (left, eval(r, m)?.truth()) {
                (_, Some(true)) => V::Bool(true),
                (Some(false), Some(false)) => V::Bool(false),
                _ => V::Null,
            },
        },
        Expr::Binary(op, l, r) => {
            let (l, r) = (eval(l, m)?, eval(r, m)?);
            match op {
                BinaryOp::Eq => tri(equal(&l, &r)),
                BinaryOp::Ne => tri(equal(&l, &r).map(|b| !b)),
                BinaryOp::Lt => tri(order(&l, &r).map(Ordering::is_lt)),
                BinaryOp::Le => tri(order(&l, &r).map(Ordering::is_le)),
                BinaryOp::Gt => tri(order(&l, &r).map(Ordering::is_gt)),
                BinaryOp::Ge => tri(order(&l, &r).map(Ordering::is_ge)),
                _ => arithmetic(*op, l, r)?,
            }
        }
        Expr::IsNull { expr, negated } => V::Bool(matches!(eval(expr, m)?, V::Null) != *negated),
        Expr::In {
            expr,
            list,
            negated,
        } => {
            let left = eval(expr, m)?;
            if matches!(left, V::Null) {
                return Ok(V::Null);
            }
            let mut unknown = false;
            let mut found = false;
            for item in list {
                match equal(&left, &eval(item, m)?) {
                    Some(true) => {
                        found = true;
                        break;
                    }
                    Some(false) => {}
                    None => unknown = true,
                }
            }
            match (found, unknown) {
                (true, _) => V::Bool(!*negated),
                (false, true) => V::Null,
                (false, false) => V::Bool(*negated),
            }
        }
        Expr::Like {
            expr,
            pattern,
            escape,
            negated,
        } => {
            let text = eval(expr, m)?;
            let pattern = eval(pattern, m)?;
            let escape = match escape {
                None => None,
                Some(e) => match eval(e, m)? {
                    V::Null => return Ok(V::Null),
                    V::Str(s) if s.chars().count() == 1 => s.chars().next(),
                    other => {
                        return Err(err(format!(
                            "the ESCAPE character must be a one-character string, got '{}'",
                            other.into_value()
                        )));
                    }
                },
            };
            let pattern = match pattern {
                V::Null => return Ok(V::Null),
                V::Str(p) => p,
                other => {
                    return Err(err(format!(
                        "a LIKE pattern must be a string, got {}",
                        other.into_value()
                    )));
                }
            };
            match text {
                V::Str(t) => V::Bool(like(&t, &pattern, escape) != *negated),
                _ => V::Null,
            }
        }
        Expr::Exists(p) => V::Bool(match p {
            Property::Sys(s) => !m.sys(*s).is_null(),
            Property::User { key, .. } => m.user_lower(key).is_some(),
        }),
    })
}

/// `=`: `None` when either side is NULL or the types cannot be compared.
fn equal(l: &V, r: &V) -> Option<bool> {
    match (l, r) {
        (V::Str(a), V::Str(b)) => Some(a == b),
        (V::Bool(a), V::Bool(b)) => Some(a == b),
        (V::Uuid(a), V::Uuid(b)) => Some(a == b),
        (V::Uuid(a), V::Str(b)) | (V::Str(b), V::Uuid(a)) => {
            Some(Uuid::parse_str(b).is_ok_and(|b| b == *a))
        }
        (V::Timestamp(a), V::Timestamp(b)) => Some(a == b),
        _ => order(l, r).map(Ordering::is_eq),
    }
}

/// Relational order: numbers (with Int64 → double promotion) and timestamps only.
fn order(l: &V, r: &V) -> Option<Ordering> {
    match (l, r) {
        (V::Long(a), V::Long(b)) => Some(a.cmp(b)),
        (V::Long(a), V::Double(b)) => (*a as f64).partial_cmp(b),
        (V::Double(a), V::Long(b)) => a.partial_cmp(&(*b as f64)),
        (V::Double(a), V::Double(b)) => a.partial_cmp(b),
        (V::Timestamp(a), V::Timestamp(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

fn arithmetic<'a>(op: BinaryOp, l: V<'a>, r: V<'a>) -> Result<V<'a>, EvalError> {
    let overflow = || err(format!("arithmetic overflow in '{}'", op.symbol()));
    Ok(match (l, r) {
        (V::Null, _) | (_, V::Null) => V::Null,
        (V::Long(a), V::Long(b)) => V::Long(match op {
            BinaryOp::Add => a.checked_add(b).ok_or_else(overflow)?,
            BinaryOp::Sub => a.checked_sub(b).ok_or_else(overflow)?,
            BinaryOp::Mul => a.checked_mul(b).ok_or_else(overflow)?,
            BinaryOp::Div | BinaryOp::Mod if b == 0 => {
                return Err(err("integer division by zero"));
            }
            BinaryOp::Div => a.checked_div(b).ok_or_else(overflow)?,
            BinaryOp::Mod => a.checked_rem(b).ok_or_else(overflow)?,
            _ => return Ok(V::Null),
        }),
        (a @ (V::Long(_) | V::Double(_)), b @ (V::Long(_) | V::Double(_))) => {
            let (a, b) = (as_f64(&a), as_f64(&b));
            V::Double(match op {
                BinaryOp::Add => a + b,
                BinaryOp::Sub => a - b,
                BinaryOp::Mul => a * b,
                BinaryOp::Div => a / b,
                BinaryOp::Mod => a % b,
                _ => return Ok(V::Null),
            })
        }
        // `+` with a string operand concatenates, as in C#.
        (a, b) if op == BinaryOp::Add && (matches!(a, V::Str(_)) || matches!(b, V::Str(_))) => {
            match (a.text(), b.text()) {
                (Some(x), Some(y)) => V::Str(Cow::Owned(format!("{x}{y}"))),
                _ => V::Null,
            }
        }
        _ => V::Null,
    })
}

fn as_f64(v: &V) -> f64 {
    match v {
        V::Long(n) => *n as f64,
        V::Double(d) => *d,
        _ => f64::NAN,
    }
}

/// One element of a LIKE pattern.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Pat {
    /// `%`
    Any,
    /// `_`
    One,
    Char(char),
}

/// SQL LIKE over the whole string, case-sensitive: `%` any run, `_` one character, and the escape
/// character makes the next pattern character literal. Greedy with one backtrack point, so
/// O(len(text) × len(pattern)) at worst, never exponential.
pub fn like(text: &str, pattern: &str, escape: Option<char>) -> bool {
    let mut pat = Vec::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        pat.push(match c {
            c if Some(c) == escape => Pat::Char(chars.next().unwrap_or(c)),
            '%' => Pat::Any,
            '_' => Pat::One,
            c => Pat::Char(c),
        });
    }
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    loop {
        let c = text[t..].chars().next();
        match (pat.get(p), c) {
            (Some(Pat::Any), _) => {
                star = Some((p, t));
                p += 1;
                continue;
            }
            (Some(Pat::One), Some(c)) => {
                p += 1;
                t += c.len_utf8();
                continue;
            }
            (Some(Pat::Char(want)), Some(c)) if *want == c => {
                p += 1;
                t += c.len_utf8();
                continue;
            }
            (None, None) => return true,
            _ => {}
        }
        // Mismatch: let the last `%` swallow one more character, or fail.
        let Some((sp, st)) = star else { return false };
        let Some(c) = text[st..].chars().next() else {
            return false;
        };
        star = Some((sp, st + c.len_utf8()));
        p = sp + 1;
        t = st + c.len_utf8();
    }
}
