//! The Service Bus SQL filter and rule-action language: [`lexer`] → [`parser`] → [`ast`] → `eval`.
//!
//! Syntax errors carry the 1-based character position and the reason; no input panics the parser or
//! the evaluator, and nesting is bounded so no input exhausts the stack (property-tested in `tests`).

pub mod ast;
mod eval;
mod lexer;
mod parser;
#[cfg(test)]
mod tests;

use std::fmt;

use self::ast::{Expr, Property, Statement};
use self::parser::Parser;
use super::{FilterValue, MessageView, SysProperty};

/// Service Bus's limit on the length of a filter or action expression.
pub const MAX_LEN: usize = 1024;
/// Service Bus's limit on statements in one action.
pub const MAX_STATEMENTS: usize = 32;
/// How deeply parentheses, NOT and unary signs may nest.
pub const MAX_DEPTH: usize = 64;

/// Why a filter or action expression is refused (at Config.json load or add-rule).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SqlError {
    #[error("syntax error at position {position}: {reason}")]
    Syntax { position: usize, reason: String },
    #[error("the expression is {len} characters long; Service Bus allows at most {MAX_LEN}")]
    TooLong { len: usize },
}

/// Why a valid filter could not be evaluated for one message (the topic goes on).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(pub String);

fn check_len(text: &str) -> Result<(), SqlError> {
    let len = text.chars().count();
    if len > MAX_LEN {
        return Err(SqlError::TooLong { len });
    }
    Ok(())
}

/// A parsed SQL filter; keeps its text, which clients read back exactly as they sent it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct SqlFilter {
    text: String,
    expr: Expr,
}

impl PartialEq for SqlFilter {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl SqlFilter {
    pub fn parse(text: &str) -> Result<SqlFilter, SqlError> {
        check_len(text)?;
        let mut parser = Parser::new(text)?;
        let expr = parser.expression()?;
        parser.expect_end()?;
        Ok(SqlFilter {
            text: text.to_string(),
            expr,
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn expr(&self) -> &Expr {
        &self.expr
    }

    /// TRUE selects; FALSE and unknown (NULL) do not.
    pub fn evaluate(&self, message: &MessageView) -> Result<bool, EvalError> {
        Ok(eval::eval(&self.expr, message)?.into_value() == FilterValue::Bool(true))
    }
}

/// Parse an expression without the length limit (tests and the property test's printed trees).
pub fn parse_expression(text: &str) -> Result<Expr, SqlError> {
    let mut parser = Parser::new(text)?;
    let expr = parser.expression()?;
    parser.expect_end()?;
    Ok(expr)
}

/// A change an action made, for the broker to write into the subscription's copy.
#[derive(Debug, Clone, PartialEq)]
pub enum Edit {
    SetSys(SysProperty, FilterValue),
    SetUser(String, FilterValue),
    RemoveUser(String),
}

/// A parsed rule action (`SET x = 1; REMOVE y`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct SqlAction {
    text: String,
    statements: Vec<Statement>,
}

impl PartialEq for SqlAction {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl SqlAction {
    pub fn parse(text: &str) -> Result<SqlAction, SqlError> {
        check_len(text)?;
        let statements = Parser::new(text)?.statements()?;
        Ok(SqlAction {
            text: text.to_string(),
            statements,
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn statements(&self) -> &[Statement] {
        &self.statements
    }

    /// Run the statements in order on `message` (each sees the previous ones' changes) and return the
    /// edits to make on the stored copy.
    pub fn apply(&self, message: &mut MessageView) -> Result<Vec<Edit>, EvalError> {
        let mut edits = Vec::with_capacity(self.statements.len());
        for statement in &self.statements {
            match statement {
                Statement::Set(target, expr) => {
                    let value = eval::eval(expr, message)?.into_value();
                    match target {
                        Property::Sys(p) => {
                            let value = sys_value(*p, value);
                            message.set_sys(*p, value.clone());
                            edits.push(Edit::SetSys(*p, value));
                        }
                        Property::User { name, .. } => {
                            message.set_user(name, value.clone());
                            edits.push(Edit::SetUser(name.clone(), value));
                        }
                    }
                }
                Statement::Remove(Property::Sys(p)) => {
                    message.set_sys(*p, FilterValue::Null);
                    edits.push(Edit::SetSys(*p, FilterValue::Null));
                }
                Statement::Remove(Property::User { name, .. }) => {
                    message.remove_user(name);
                    edits.push(Edit::RemoveUser(name.clone()));
                }
            }
        }
        Ok(edits)
    }
}

/// String-typed system properties take the string form of what is assigned (`SET sys.To = 5`).
fn sys_value(p: SysProperty, v: FilterValue) -> FilterValue {
    match (p, &v) {
        (SysProperty::ScheduledEnqueueTimeUtc | SysProperty::TimeToLive, _)
        | (_, FilterValue::Null | FilterValue::String(_)) => v,
        _ => FilterValue::String(v.to_string()),
    }
}

impl fmt::Display for SqlFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

// The store keeps a filter or action as its text; reading it back parses it again.
impl From<SqlFilter> for String {
    fn from(f: SqlFilter) -> String {
        f.text
    }
}

impl TryFrom<String> for SqlFilter {
    type Error = SqlError;
    fn try_from(text: String) -> Result<SqlFilter, SqlError> {
        SqlFilter::parse(&text)
    }
}

impl From<SqlAction> for String {
    fn from(a: SqlAction) -> String {
        a.text
    }
}

impl TryFrom<String> for SqlAction {
    type Error = SqlError;
    fn try_from(text: String) -> Result<SqlAction, SqlError> {
        SqlAction::parse(&text)
    }
}
