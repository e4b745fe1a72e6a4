//! Subscription rules: what a topic evaluates for each subscription to decide whether it gets a copy.
//!
//! A [`Rule`] is a name, a [`Filter`] (true, false, a [`CorrelationFilter`] or a SQL expression) and
//! an optional SQL action. Filters look at a [`MessageView`]: the system properties (`sys.`) and user
//! (application) properties of one message, decoded once per send and shared by every subscription of
//! the topic, so a fan-out to N subscriptions decodes the message once.
//!
//! The SQL language (lexer → parser → AST → evaluator) lives in [`sql`]; it never panics on any input
//! and reports syntax errors with the character position.

mod correlation;
pub mod sql;
mod value;
mod view;

use std::fmt;

pub use self::correlation::CorrelationFilter;
pub use self::sql::{SqlAction, SqlError, SqlFilter};
pub use self::value::FilterValue;
pub use self::view::{MessageView, SysProperty};

/// The name Service Bus gives the rule every new subscription starts with (a true filter).
pub const DEFAULT_RULE_NAME: &str = "$Default";

/// Service Bus's limit on rule names.
pub const MAX_RULE_NAME_LEN: usize = 50;

/// What a rule selects.
// Serialized for the store (`--data-dir`); SQL keeps its text and is parsed again when read.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Filter {
    /// Every message (`1=1`).
    True,
    /// No message (`1=0`).
    False,
    /// System and user properties that must all equal the given values.
    Correlation(CorrelationFilter),
    /// A SQL expression over `sys.` and user properties.
    Sql(SqlFilter),
}

/// The outcome of evaluating a filter for one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Selected {
    Yes,
    No,
    /// The filter could not be evaluated (a runtime error such as integer division by zero); the
    /// subscription dead-letters or drops that copy, but the topic goes on.
    Error(String),
}

impl Filter {
    /// Whether the filter selects the message.
    pub fn evaluate(&self, message: &MessageView) -> Selected {
        match self {
            Filter::True => Selected::Yes,
            Filter::False => Selected::No,
            Filter::Correlation(c) => {
                if c.matches(message) {
                    Selected::Yes
                } else {
                    Selected::No
                }
            }
            Filter::Sql(s) => match s.evaluate(message) {
                Ok(true) => Selected::Yes,
                Ok(false) => Selected::No,
                Err(e) => Selected::Error(e.to_string()),
            },
        }
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Filter::True => f.write_str("TrueFilter"),
            Filter::False => f.write_str("FalseFilter"),
            Filter::Correlation(c) => write!(f, "CorrelationFilter {c}"),
            Filter::Sql(s) => write!(f, "SqlFilter '{}'", s.text()),
        }
    }
}

/// One rule of a subscription.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Rule {
    pub name: String,
    pub filter: Filter,
    /// Applied to the subscription's own copy when the filter matches.
    pub action: Option<SqlAction>,
}

/// Why a rule cannot be created.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RuleError {
    #[error(
        "the rule name \"{0}\" is not valid; use 1 to {MAX_RULE_NAME_LEN} characters without '/', '\\\\', '?' or '#'"
    )]
    Name(String),
    #[error(transparent)]
    Sql(#[from] SqlError),
}

impl Rule {
    /// `$Default`: a true filter without action, as Service Bus gives every new subscription.
    pub fn default_rule() -> Rule {
        Rule {
            name: DEFAULT_RULE_NAME.to_string(),
            filter: Filter::True,
            action: None,
        }
    }

    /// A rule with any filter and no action; the name is checked.
    pub fn new(name: impl Into<String>, filter: Filter) -> Result<Rule, RuleError> {
        let name = name.into();
        let bad = |c: char| matches!(c, '/' | '\\' | '?' | '#') || c.is_control();
        if name.is_empty() || name.chars().count() > MAX_RULE_NAME_LEN || name.contains(bad) {
            return Err(RuleError::Name(name));
        }
        Ok(Rule {
            name,
            filter,
            action: None,
        })
    }

    /// A rule with a SQL filter, parsed now (a syntax error names its position).
    pub fn sql(name: impl Into<String>, expression: &str) -> Result<Rule, RuleError> {
        Rule::new(name, Filter::Sql(SqlFilter::parse(expression)?))
    }

    /// A rule with a correlation filter.
    pub fn correlation(
        name: impl Into<String>,
        filter: CorrelationFilter,
    ) -> Result<Rule, RuleError> {
        Rule::new(name, Filter::Correlation(filter))
    }

    /// Add a SQL action (`SET x = 1; REMOVE y`), parsed now.
    pub fn with_action(mut self, action: &str) -> Result<Rule, RuleError> {
        self.action = Some(SqlAction::parse(action)?);
        Ok(self)
    }
}
