//! Recursive descent over the tokens. Precedence, lowest first (SQL-92 order, which Service Bus does
//! not document otherwise): OR, AND, NOT, comparisons / LIKE / IN / IS NULL, `+ -`, `* / %`, unary
//! `+ -`. Nesting is bounded so that no input can exhaust the stack.

use super::ast::{BinaryOp, Expr, Literal, Property, Statement, UnaryOp};
use super::lexer::{Tok, Token, syntax, tokenize};
use super::{MAX_DEPTH, SqlError};
use crate::filter::SysProperty;

const KEYWORDS: &[&str] = &[
    "AND", "OR", "NOT", "IS", "NULL", "IN", "LIKE", "ESCAPE", "EXISTS", "TRUE", "FALSE",
];

pub struct Parser {
    tokens: Vec<Token>,
    at: usize,
    depth: usize,
}

fn is_keyword(word: &str) -> bool {
    KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(word))
}

fn describe(tok: &Tok) -> String {
    match tok {
        Tok::Word(w) => format!("'{w}'"),
        Tok::Delimited(w) => format!("identifier '{w}'"),
        Tok::Str(s) => format!("string '{s}'"),
        Tok::Int(n) => format!("number {n}"),
        Tok::Num(n) => format!("number {n}"),
        Tok::Op(o) => format!("'{o}'"),
        Tok::LParen => "'('".into(),
        Tok::RParen => "')'".into(),
        Tok::Comma => "','".into(),
        Tok::Dot => "'.'".into(),
        Tok::Semi => "';'".into(),
        Tok::Eof => "the end of the expression".into(),
    }
}

impl Parser {
    pub fn new(text: &str) -> Result<Parser, SqlError> {
        Ok(Parser {
            tokens: tokenize(text)?,
            at: 0,
            depth: 0,
        })
    }

    fn peek(&self) -> &Token {
        // `tokenize` always ends with Eof and `bump` never moves past it.
        &self.tokens[self.at.min(self.tokens.len() - 1)]
    }

    fn peek_at(&self, ahead: usize) -> &Tok {
        &self.tokens[(self.at + ahead).min(self.tokens.len() - 1)].tok
    }

    fn bump(&mut self) -> Token {
        let t = self.peek().clone();
        if t.tok != Tok::Eof {
            self.at += 1;
        }
        t
    }

    fn keyword(&self, kw: &str) -> bool {
        matches!(&self.peek().tok, Tok::Word(w) if w.eq_ignore_ascii_case(kw))
    }

    fn keyword_at(&self, ahead: usize, kw: &str) -> bool {
        matches!(self.peek_at(ahead), Tok::Word(w) if w.eq_ignore_ascii_case(kw))
    }

    fn eat_keyword(&mut self, kw: &str) -> bool {
        let yes = self.keyword(kw);
        if yes {
            self.bump();
        }
        yes
    }

    fn unexpected(&self, expected: &str) -> SqlError {
        let t = self.peek();
        syntax(
            t.pos,
            format!("expected {expected}, found {}", describe(&t.tok)),
        )
    }

    fn expect(&mut self, tok: Tok, what: &str) -> Result<(), SqlError> {
        if self.peek().tok == tok {
            self.bump();
            Ok(())
        } else {
            Err(self.unexpected(what))
        }
    }

    fn expect_keyword(&mut self, kw: &str) -> Result<(), SqlError> {
        if self.eat_keyword(kw) {
            Ok(())
        } else {
            Err(self.unexpected(kw))
        }
    }

    /// Enter one level of nesting; refuse past [`MAX_DEPTH`].
    fn nest(&mut self) -> Result<(), SqlError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(syntax(
                self.peek().pos,
                format!("the expression is nested more than {MAX_DEPTH} levels deep"),
            ));
        }
        Ok(())
    }

    pub fn at_end(&self) -> bool {
        self.peek().tok == Tok::Eof
    }

    pub fn expect_end(&self) -> Result<(), SqlError> {
        if self.at_end() {
            Ok(())
        } else {
            Err(self.unexpected("an operator or the end of the expression"))
        }
    }

    /// A whole predicate.
    pub fn expression(&mut self) -> Result<Expr, SqlError> {
        self.nest()?;
        let e = self.or();
        self.depth -= 1;
        let e = e?;
        if e.depth() > MAX_DEPTH * 2 {
            return Err(syntax(
                1,
                format!(
                    "the expression is nested more than {} levels deep",
                    MAX_DEPTH * 2
                ),
            ));
        }
        Ok(e)
    }

    fn or(&mut self) -> Result<Expr, SqlError> {
        let mut left = self.and()?;
        while self.eat_keyword("OR") {
            let right = self.and()?;
            left = Expr::Binary(BinaryOp::Or, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, SqlError> {
        let mut left = self.not()?;
        while self.eat_keyword("AND") {
            let right = self.not()?;
            left = Expr::Binary(BinaryOp::And, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, SqlError> {
        if self.eat_keyword("NOT") {
            self.nest()?;
            let inner = self.not();
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner?)));
        }
        self.predicate()
    }

    fn predicate(&mut self) -> Result<Expr, SqlError> {
        let left = self.additive()?;
        let op = match &self.peek().tok {
            Tok::Op("=") => Some(BinaryOp::Eq),
            Tok::Op("<>") | Tok::Op("!=") => Some(BinaryOp::Ne),
            Tok::Op("<") => Some(BinaryOp::Lt),
            Tok::Op("<=") => Some(BinaryOp::Le),
            Tok::Op(">") => Some(BinaryOp::Gt),
            Tok::Op(">=") => Some(BinaryOp::Ge),
            _ => None,
        };
        if let Some(op) = op {
            self.bump();
            let right = self.additive()?;
            return Ok(Expr::Binary(op, Box::new(left), Box::new(right)));
        }
        if self.eat_keyword("IS") {
            let negated = self.eat_keyword("NOT");
            self.expect_keyword("NULL")?;
            return Ok(Expr::IsNull {
                expr: Box::new(left),
                negated,
            });
        }
        let negated =
            self.keyword("NOT") && (self.keyword_at(1, "IN") || self.keyword_at(1, "LIKE"));
        if negated {
            self.bump();
        }
        if self.eat_keyword("IN") {
            self.expect(Tok::LParen, "'(' after IN")?;
            let mut list = vec![self.additive()?];
            while self.peek().tok == Tok::Comma {
                self.bump();
                list.push(self.additive()?);
            }
            self.expect(Tok::RParen, "',' or ')' in the IN list")?;
            return Ok(Expr::In {
                expr: Box::new(left),
                list,
                negated,
            });
        }
        if self.eat_keyword("LIKE") {
            let pattern_pos = self.peek().pos;
            let pattern = self.additive()?;
            let escape = if self.eat_keyword("ESCAPE") {
                let pos = self.peek().pos;
                let e = self.additive()?;
                if let Expr::Literal(Literal::String(s)) = &e
                    && s.chars().count() != 1
                {
                    return Err(syntax(
                        pos,
                        format!("the ESCAPE character must be one character, got '{s}'"),
                    ));
                }
                Some(Box::new(e))
            } else {
                None
            };
            if let Expr::Literal(l @ (Literal::Long(_) | Literal::Double(_) | Literal::Bool(_))) =
                &pattern
            {
                return Err(syntax(
                    pattern_pos,
                    format!("a LIKE pattern must be a string, got {l}"),
                ));
            }
            return Ok(Expr::Like {
                expr: Box::new(left),
                pattern: Box::new(pattern),
                escape,
                negated,
            });
        }
        Ok(left)
    }

    fn additive(&mut self) -> Result<Expr, SqlError> {
        let mut left = self.multiplicative()?;
        loop {
            let op = match self.peek().tok {
                Tok::Op("+") => BinaryOp::Add,
                Tok::Op("-") => BinaryOp::Sub,
                _ => return Ok(left),
            };
            self.bump();
            let right = self.multiplicative()?;
            left = Expr::Binary(op, Box::new(left), Box::new(right));
        }
    }

    fn multiplicative(&mut self) -> Result<Expr, SqlError> {
        let mut left = self.unary()?;
        loop {
            let op = match self.peek().tok {
                Tok::Op("*") => BinaryOp::Mul,
                Tok::Op("/") => BinaryOp::Div,
                Tok::Op("%") => BinaryOp::Mod,
                _ => return Ok(left),
            };
            self.bump();
            let right = self.unary()?;
            left = Expr::Binary(op, Box::new(left), Box::new(right));
        }
    }

    fn unary(&mut self) -> Result<Expr, SqlError> {
        let op = match self.peek().tok {
            Tok::Op("-") => UnaryOp::Neg,
            Tok::Op("+") => UnaryOp::Plus,
            _ => return self.primary(),
        };
        self.bump();
        self.nest()?;
        let inner = self.unary();
        self.depth -= 1;
        Ok(Expr::Unary(op, Box::new(inner?)))
    }

    fn primary(&mut self) -> Result<Expr, SqlError> {
        let token = self.peek().clone();
        match token.tok {
            Tok::Int(n) => {
                self.bump();
                Ok(Expr::Literal(Literal::Long(n)))
            }
            Tok::Num(n) => {
                self.bump();
                Ok(Expr::Literal(Literal::Double(n)))
            }
            Tok::Str(s) => {
                self.bump();
                Ok(Expr::Literal(Literal::String(s)))
            }
            Tok::LParen => {
                self.bump();
                self.nest()?;
                let inner = self.or();
                self.depth -= 1;
                let inner = inner?;
                self.expect(Tok::RParen, "')'")?;
                Ok(inner)
            }
            Tok::Word(ref w) if w.eq_ignore_ascii_case("NULL") => {
                self.bump();
                Ok(Expr::Literal(Literal::Null))
            }
            Tok::Word(ref w) if w.eq_ignore_ascii_case("TRUE") => {
                self.bump();
                Ok(Expr::Literal(Literal::Bool(true)))
            }
            Tok::Word(ref w) if w.eq_ignore_ascii_case("FALSE") => {
                self.bump();
                Ok(Expr::Literal(Literal::Bool(false)))
            }
            Tok::Word(ref w) if w.eq_ignore_ascii_case("EXISTS") => {
                self.bump();
                self.expect(Tok::LParen, "'(' after EXISTS")?;
                let p = self.property()?;
                self.expect(Tok::RParen, "')' to close EXISTS(")?;
                Ok(Expr::Exists(p))
            }
            Tok::Word(ref w) if *self.peek_at(1) == Tok::LParen => {
                self.function(w.clone(), token.pos)
            }
            Tok::Word(_) | Tok::Delimited(_) => Ok(Expr::Property(self.property()?)),
            _ => Err(self.unexpected("a value, a property or '('")),
        }
    }

    fn function(&mut self, name: String, pos: usize) -> Result<Expr, SqlError> {
        self.bump();
        self.bump();
        if name.eq_ignore_ascii_case("newid") {
            self.expect(Tok::RParen, "')': newid() takes no arguments")?;
            return Ok(Expr::NewId);
        }
        if name.eq_ignore_ascii_case("property") || name.eq_ignore_ascii_case("p") {
            self.nest()?;
            let arg = self.additive();
            self.depth -= 1;
            let arg = arg?;
            self.expect(Tok::RParen, "')' after the property name")?;
            return Ok(Expr::PropertyOf(Box::new(arg)));
        }
        Err(syntax(
            pos,
            format!("unknown function '{name}'; the functions are newid() and property(name)"),
        ))
    }

    /// `[sys. | user.] name`, where name is a regular, `[delimited]` or `"quoted"` identifier.
    pub fn property(&mut self) -> Result<Property, SqlError> {
        let first = self.peek().clone();
        let scope = match &first.tok {
            Tok::Word(w) if *self.peek_at(1) == Tok::Dot => {
                if w.eq_ignore_ascii_case("sys") {
                    Some(true)
                } else if w.eq_ignore_ascii_case("user") {
                    Some(false)
                } else {
                    return Err(syntax(
                        first.pos,
                        format!(
                            "unknown scope '{w}'; a property is sys.<name>, user.<name> or <name>"
                        ),
                    ));
                }
            }
            _ => None,
        };
        if scope.is_some() {
            self.bump();
            self.bump();
        }
        let name_token = self.bump();
        let name = match name_token.tok {
            Tok::Word(w) if !is_keyword(&w) => w,
            Tok::Delimited(w) => w,
            other => {
                return Err(syntax(
                    name_token.pos,
                    format!("expected a property name, found {}", describe(&other)),
                ));
            }
        };
        match scope {
            Some(true) => SysProperty::parse(&name).map(Property::Sys).ok_or_else(|| {
                syntax(
                    name_token.pos,
                    format!("'{name}' is not a system property (known: {})", sys_names()),
                )
            }),
            _ => Ok(Property::user(name)),
        }
    }

    /// `SET property = expression` or `REMOVE property`, separated by `;` (a trailing one is fine).
    pub fn statements(&mut self) -> Result<Vec<Statement>, SqlError> {
        let mut out = Vec::new();
        loop {
            while matches!(self.peek().tok, Tok::Semi | Tok::Comma) {
                self.bump();
            }
            if self.at_end() {
                break;
            }
            let pos = self.peek().pos;
            let statement = if self.eat_keyword("SET") {
                let target = self.settable_property()?;
                self.expect(Tok::Op("="), "'=' after the property to SET")?;
                Statement::Set(target, self.expression()?)
            } else if self.eat_keyword("REMOVE") {
                Statement::Remove(self.settable_property()?)
            } else {
                return Err(self.unexpected("SET or REMOVE"));
            };
            out.push(statement);
            if out.len() > super::MAX_STATEMENTS {
                return Err(syntax(
                    pos,
                    format!("an action has at most {} statements", super::MAX_STATEMENTS),
                ));
            }
            if !matches!(self.peek().tok, Tok::Semi | Tok::Comma | Tok::Eof) {
                return Err(self.unexpected("';' between statements"));
            }
        }
        if out.is_empty() {
            return Err(syntax(
                1,
                "an action needs at least one SET or REMOVE statement",
            ));
        }
        Ok(out)
    }

    fn settable_property(&mut self) -> Result<Property, SqlError> {
        let pos = self.peek().pos;
        let p = self.property()?;
        if let Property::Sys(s) = p
            && !s.settable()
        {
            return Err(syntax(
                pos,
                format!(
                    "sys.{} is set by the broker and cannot be changed by an action",
                    s.name()
                ),
            ));
        }
        Ok(p)
    }
}

fn sys_names() -> String {
    SysProperty::ALL
        .iter()
        .map(|p| p.name())
        .collect::<Vec<_>>()
        .join(", ")
}
