//! The syntax tree, and its printing: fully parenthesised, so that parsing the printed text gives the
//! same tree back (the property test holds the parser and the printer to that).

use std::fmt;

use super::super::SysProperty;

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Null,
    Bool(bool),
    /// Integer constants are Int64; the parser produces only non-negative ones (`-1` is a negation).
    Long(i64),
    /// Decimal and approximate constants (`2.0`, `1.5E3`) are doubles; finite and non-negative.
    Double(f64),
    String(String),
}

/// A property reference: `sys.Label`, `color`, `user.color`, `[my-prop]`, `"http://x"`.
#[derive(Debug, Clone, PartialEq)]
pub enum Property {
    Sys(SysProperty),
    /// `name` as written; `key` lower-cased for lookups (names are case-insensitive).
    User {
        name: String,
        key: String,
    },
}

impl Property {
    pub fn user(name: impl Into<String>) -> Property {
        let name = name.into();
        let key = name.to_lowercase();
        Property::User { name, key }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnaryOp {
    Neg,
    Plus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
}

impl BinaryOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Mod => "%",
            BinaryOp::Eq => "=",
            BinaryOp::Ne => "<>",
            BinaryOp::Lt => "<",
            BinaryOp::Le => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::Ge => ">=",
            BinaryOp::And => "AND",
            BinaryOp::Or => "OR",
        }
    }
}

/// One node. Predicates and value expressions share the type; evaluation gives a boolean (or NULL,
/// "unknown") for predicates.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Literal(Literal),
    Property(Property),
    /// `newid()`: a fresh GUID.
    NewId,
    /// `property(expr)` / `p(expr)`: the user property named by a string expression.
    PropertyOf(Box<Expr>),
    Unary(UnaryOp, Box<Expr>),
    Not(Box<Expr>),
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    IsNull {
        expr: Box<Expr>,
        negated: bool,
    },
    In {
        expr: Box<Expr>,
        list: Vec<Expr>,
        negated: bool,
    },
    Like {
        expr: Box<Expr>,
        pattern: Box<Expr>,
        escape: Option<Box<Expr>>,
        negated: bool,
    },
    Exists(Property),
}

impl Expr {
    /// The depth of the tree (a literal is 1), for the nesting limit.
    pub fn depth(&self) -> usize {
        1 + match self {
            Expr::Literal(_) | Expr::Property(_) | Expr::NewId | Expr::Exists(_) => 0,
            Expr::PropertyOf(e)
            | Expr::Unary(_, e)
            | Expr::Not(e)
            | Expr::IsNull { expr: e, .. } => e.depth(),
            Expr::Binary(_, l, r) => l.depth().max(r.depth()),
            Expr::In { expr, list, .. } => list
                .iter()
                .map(Expr::depth)
                .max()
                .unwrap_or(0)
                .max(expr.depth()),
            Expr::Like {
                expr,
                pattern,
                escape,
                ..
            } => expr
                .depth()
                .max(pattern.depth())
                .max(escape.as_ref().map_or(0, |e| e.depth())),
        }
    }
}

/// One statement of a rule action.
#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    Set(Property, Expr),
    Remove(Property),
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Null => f.write_str("NULL"),
            Literal::Bool(true) => f.write_str("TRUE"),
            Literal::Bool(false) => f.write_str("FALSE"),
            Literal::Long(n) => write!(f, "{n}"),
            // `{:?}` always writes a '.' or an exponent, so the text lexes as a double again.
            Literal::Double(d) => write!(f, "{d:?}"),
            Literal::String(s) => write!(f, "'{}'", s.replace('\'', "''")),
        }
    }
}

impl fmt::Display for Property {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Property::Sys(p) => write!(f, "sys.{}", p.name()),
            Property::User { name, .. } => write!(f, "user.[{}]", name.replace(']', "]]")),
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let not = |negated: &bool| if *negated { "NOT " } else { "" };
        match self {
            Expr::Literal(l) => write!(f, "{l}"),
            Expr::Property(p) => write!(f, "{p}"),
            Expr::NewId => f.write_str("newid()"),
            Expr::PropertyOf(e) => write!(f, "property({e})"),
            Expr::Unary(UnaryOp::Neg, e) => write!(f, "(-{e})"),
            Expr::Unary(UnaryOp::Plus, e) => write!(f, "(+{e})"),
            Expr::Not(e) => write!(f, "(NOT {e})"),
            Expr::Binary(op, l, r) => write!(f, "({l} {} {r})", op.symbol()),
            Expr::IsNull { expr, negated } => write!(f, "({expr} IS {}NULL)", not(negated)),
            Expr::In {
                expr,
                list,
                negated,
            } => {
                write!(f, "({expr} {}IN (", not(negated))?;
                for (i, e) in list.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{e}")?;
                }
                f.write_str("))")
            }
            Expr::Like {
                expr,
                pattern,
                escape,
                negated,
            } => {
                write!(f, "({expr} {}LIKE {pattern}", not(negated))?;
                if let Some(e) = escape {
                    write!(f, " ESCAPE {e}")?;
                }
                f.write_str(")")
            }
            Expr::Exists(p) => write!(f, "EXISTS({p})"),
        }
    }
}

impl fmt::Display for Statement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Statement::Set(p, e) => write!(f, "SET {p} = {e}"),
            Statement::Remove(p) => write!(f, "REMOVE {p}"),
        }
    }
}
