//! The SQL language against one fixed message (the reference's worked examples and more), and
//! property tests: no input panics, and printing a tree then parsing it gives the same tree.

use proptest::prelude::*;

use super::ast::{BinaryOp, Expr, Literal, Property, UnaryOp};
use super::*;

fn message() -> MessageView {
    let s = |v: &str| FilterValue::String(v.into());
    MessageView::new()
        .with_user("color", s("red"))
        .with_user("quantity", FilterValue::Long(10))
        .with_user("price", FilterValue::Double(12.5))
        .with_user("priority", s("high"))
        .with_user("code", s("ABC%"))
        .with_user("name", s("O'Brien"))
        .with_user("nothing", FilterValue::Null)
        .with_user("flag", FilterValue::Bool(true))
        .with_user("count_str", s("15"))
        .with_user("my-prop", s("x"))
        .with_user("path", s("a_b"))
        .with_sys(SysProperty::Label, s("Orders"))
        .with_sys(SysProperty::MessageId, s("abc-1"))
        .with_sys(SysProperty::To, s("Store5"))
        .with_sys(SysProperty::ContentType, s("application/json"))
        .with_sys(SysProperty::SequenceNumber, FilterValue::Long(7))
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    Match,
    NoMatch,
    /// Refused when the rule is created.
    Invalid,
    /// Valid, but this message cannot be evaluated (the copy is dead-lettered).
    Fails,
}
use Want::*;

const TABLE: &[(&str, Want)] = &[
    // comparisons and names
    ("color = 'red'", Match),
    ("Color = 'red'", Match),
    ("COLOR = 'red'", Match),
    ("user.color = 'red'", Match),
    ("USER.Color = 'red'", Match),
    ("color = 'RED'", NoMatch),
    ("color <> 'blue'", Match),
    ("color != 'red'", NoMatch),
    ("quantity > 5 AND priority = 'high'", Match),
    ("quantity >= 10", Match),
    ("quantity < 10", NoMatch),
    ("quantity <= 10.0", Match),
    // arithmetic and numeric promotion
    ("quantity / 3 = 3", Match),
    ("quantity % 4 = 2", Match),
    ("quantity = 10.0", Match),
    ("price * 2 > 25", NoMatch),
    ("price * 2 = 25", Match),
    ("quantity + price = 22.5", Match),
    ("-quantity = -10", Match),
    ("+quantity = 10", Match),
    ("2 + 3 * 4 = 14", Match),
    ("(2 + 3) * 4 = 20", Match),
    ("10 - 2 - 3 = 5", Match),
    ("1.5E1 = 15", Match),
    (".5 = 0.5", Match),
    ("price / 0 > 1", Match), // doubles divide to +infinity
    ("quantity / 0 = 1", Fails),
    ("quantity % 0 = 1", Fails),
    ("9223372036854775807 + 1 > 0", Fails),
    ("9223372036854775808 > 0", Invalid),
    // no string↔number coercion
    ("quantity = '10'", NoMatch),
    ("count_str > 10", NoMatch),
    ("NOT (count_str > 10)", NoMatch),
    ("color > 'a'", NoMatch),
    ("color + 1 = 'red1'", Match),
    ("'a' + 'b' = 'ab'", Match),
    // NULL and three-valued logic
    ("missing = 1", NoMatch),
    ("NOT (missing = 1)", NoMatch),
    ("missing IS NULL", Match),
    ("nothing IS NULL", Match),
    ("color IS NULL", NoMatch),
    ("color IS NOT NULL", Match),
    ("NOT EXISTS(missing)", Match),
    ("EXISTS(nothing)", Match),
    ("EXISTS(Color)", Match),
    ("EXISTS(sys.CorrelationId)", NoMatch),
    ("sys.CorrelationId IS NULL", Match),
    ("missing = 1 OR color = 'red'", Match),
    ("missing = 1 AND color = 'red'", NoMatch),
    ("missing = 1 AND color = 'blue'", NoMatch),
    ("NOT (missing = 1 AND color = 'blue')", Match),
    ("NULL = NULL", NoMatch),
    ("NULL IS NULL", Match),
    ("missing + 1 IS NULL", Match),
    ("flag", Match),
    ("flag = TRUE", Match),
    ("NOT flag", NoMatch),
    ("TRUE OR missing = 1", Match),
    // LIKE
    ("sys.Label LIKE 'Ord%'", Match),
    ("sys.label LIKE '%ERS'", NoMatch),
    ("sys.Label LIKE 'O_ders'", Match),
    ("sys.Label LIKE 'O_ers'", NoMatch),
    ("sys.Label NOT LIKE 'X%'", Match),
    ("code LIKE 'ABC!%' ESCAPE '!'", Match),
    ("color LIKE 'r!%' ESCAPE '!'", NoMatch),
    ("path LIKE 'a\\_b' ESCAPE '\\'", Match),
    ("path LIKE '%\\_%' ESCAPE '\\'", Match),
    ("color LIKE '%'", Match),
    ("color LIKE 'r%d'", Match),
    ("missing LIKE 'x%'", NoMatch),
    ("quantity LIKE '1%'", NoMatch),
    ("color LIKE 'r%' ESCAPE 'ab'", Invalid),
    ("color LIKE 5", Invalid),
    ("color LIKE quantity", Fails),
    ("color LIKE 'r%' ESCAPE priority", Fails),
    // IN
    ("sys.To IN ('Store5', 'Store6')", Match),
    ("sys.To NOT IN ('Store5')", NoMatch),
    ("quantity IN (1, 2, 10)", Match),
    ("quantity IN (1, 2, NULL)", NoMatch),
    ("NOT (quantity IN (1, 2, NULL))", NoMatch),
    ("missing IN (1, 2)", NoMatch),
    ("color NOT IN ('blue', 'green')", Match),
    // literals and identifiers
    ("name = 'O''Brien'", Match),
    ("[my-prop] = 'x'", Match),
    ("\"my-prop\" = 'x'", Match),
    ("[other-prop] = 'x'", NoMatch),
    ("1=1", Match),
    ("1=0", NoMatch),
    ("1>1", NoMatch),
    ("TRUE", Match),
    ("FALSE", NoMatch),
    // system properties
    ("sys.MessageId = 'abc-1' AND sys.To = 'Store5'", Match),
    ("sys.messageid = 'abc-1'", Match),
    ("sys.Subject = 'Orders'", Match),
    ("sys.ContentType = 'application/json'", Match),
    ("sys.SequenceNumber = 7", Match),
    ("sys.ReplyTo IS NULL", Match),
    ("sys.Foo = 1", Invalid),
    // functions
    ("property('color') = 'red'", Match),
    ("p('COLOR') = 'red'", Match),
    ("property('col' + 'or') = 'red'", Match),
    ("newid() IS NOT NULL", Match),
    ("newid() = newid()", NoMatch),
    ("property(quantity) = 1", Fails),
    ("frobnicate(1) = 1", Invalid),
    // syntax errors
    ("", Invalid),
    ("color =", Invalid),
    ("color = 'red", Invalid),
    ("(color = 'red'", Invalid),
    ("color = 'red')", Invalid),
    ("color == 'red'", Invalid),
    ("a = 1 = 2", Invalid),
    ("AND = 1", Invalid),
    ("color = @p", Invalid),
    ("foo.bar = 1", Invalid),
    ("color IN ()", Invalid),
    ("1e = 1", Invalid),
    ("12abc = 1", Invalid),
    ("[] = 1", Invalid),
    ("color # 1", Invalid),
];

#[test]
fn the_language_against_a_fixed_message() {
    assert!(TABLE.len() >= 60, "{} expressions", TABLE.len());
    let m = message();
    let mut failures = Vec::new();
    for (text, want) in TABLE {
        let got = match SqlFilter::parse(text) {
            Err(_) => Invalid,
            Ok(f) => match f.evaluate(&m) {
                Ok(true) => Match,
                Ok(false) => NoMatch,
                Err(_) => Fails,
            },
        };
        if got != *want {
            failures.push(format!("{text:?}: expected {want:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn errors_give_position_and_reason() {
    let e = |t: &str| SqlFilter::parse(t).unwrap_err().to_string();
    assert_eq!(
        e("color = 'red' AND"),
        "syntax error at position 18: expected a value, a property or '(', found the end of the expression"
    );
    assert_eq!(
        e("sys.Colour = 1"),
        format!(
            "syntax error at position 5: 'Colour' is not a system property (known: {})",
            SysProperty::ALL
                .iter()
                .map(|p| p.name())
                .collect::<Vec<_>>()
                .join(", ")
        )
    );
    assert_eq!(
        e("name = 'O'Brien"),
        "syntax error at position 11: expected an operator or the end of the expression, found 'Brien'"
    );
    assert_eq!(
        e("x = 'abc"),
        "syntax error at position 5: unterminated string: no closing '"
    );
    assert!(e(&"x".repeat(1025)).contains("1025 characters long; Service Bus allows at most 1024"));
    assert!(e(&format!("{}1{}", "(".repeat(200), ")".repeat(200))).contains("nested more than 64"));
    assert!(e(&"NOT ".repeat(250)).contains("nested more than 64"));
    assert!(e(&"-".repeat(300)).contains("nested more than 64"));
    let long_chain = format!("{}1 = 1", "1 + ".repeat(200));
    assert!(
        e(&long_chain).contains("nested more than 128"),
        "{}",
        e(&long_chain)
    );
}

#[test]
fn actions_parse_and_apply_in_order() {
    let action = SqlAction::parse(
        "SET quantity = quantity / 2; REMOVE priority;SET sys.CorrelationId = 'low'; Set total = quantity + 1;",
    )
    .unwrap();
    assert_eq!(action.statements().len(), 4);
    let mut m = message();
    let edits = action.apply(&mut m).unwrap();
    assert_eq!(
        edits,
        [
            Edit::SetUser("quantity".into(), FilterValue::Long(5)),
            Edit::RemoveUser("priority".into()),
            Edit::SetSys(
                SysProperty::CorrelationId,
                FilterValue::String("low".into())
            ),
            Edit::SetUser("total".into(), FilterValue::Long(6)),
        ]
    );
    assert_eq!(m.user("priority"), None);
    assert_eq!(
        SqlAction::parse("SET sys.To = 5")
            .unwrap()
            .apply(&mut m)
            .unwrap(),
        [Edit::SetSys(
            SysProperty::To,
            FilterValue::String("5".into())
        )]
    );
    let e = |t: &str| SqlAction::parse(t).unwrap_err().to_string();
    assert_eq!(
        e("SET sys.SequenceNumber = 1"),
        "syntax error at position 5: sys.SequenceNumber is set by the broker and cannot be changed by an action"
    );
    assert_eq!(
        e(""),
        "syntax error at position 1: an action needs at least one SET or REMOVE statement"
    );
    assert_eq!(
        e("SET x = 1 SET y = 2"),
        "syntax error at position 11: expected ';' between statements, found 'SET'"
    );
    assert_eq!(
        e("DELETE x"),
        "syntax error at position 1: expected SET or REMOVE, found 'DELETE'"
    );
    assert!(e(&"SET x = 1;".repeat(33)).contains("at most 32 statements"));
    let failing = SqlAction::parse("SET x = quantity / 0").unwrap();
    assert!(failing.apply(&mut message()).is_err());
}

#[test]
fn like_matches_whole_strings() {
    use super::eval::like;
    assert!(like("", "", None));
    assert!(like("", "%", None));
    assert!(!like("", "_", None));
    assert!(like("abc", "a%c", None));
    assert!(like("abbbc", "a%b%c", None));
    assert!(!like("abc", "a%d", None));
    assert!(like("ä€x", "__x", None));
    assert!(like("50%", "50!%", Some('!')));
    assert!(!like("500", "50!%", Some('!')));
    assert!(like(&"a".repeat(200), &"%a".repeat(50), None));
    assert!(!like(
        &"a".repeat(200),
        &format!("{}b", "%a".repeat(50)),
        None
    ));
}

// ---- property tests ----

fn name() -> impl Strategy<Value = String> {
    prop_oneof!["[a-zA-Z][a-zA-Z0-9_]{0,6}", "[a-z\\]\\[ '\"-]{1,6}",]
}

fn property() -> impl Strategy<Value = Property> {
    prop_oneof![
        proptest::sample::select(SysProperty::ALL).prop_map(Property::Sys),
        name().prop_map(Property::user),
    ]
}

fn literal() -> impl Strategy<Value = Literal> {
    prop_oneof![
        Just(Literal::Null),
        any::<bool>().prop_map(Literal::Bool),
        (0..=i64::MAX).prop_map(Literal::Long),
        (0.0..1e300f64).prop_map(Literal::Double),
        ".{0,8}".prop_map(Literal::String),
    ]
}

fn expr() -> impl Strategy<Value = Expr> {
    let leaf = prop_oneof![
        literal().prop_map(Expr::Literal),
        property().prop_map(Expr::Property),
        property().prop_map(Expr::Exists),
        Just(Expr::NewId),
    ];
    leaf.prop_recursive(5, 48, 4, |inner| {
        let b = |e: Expr| Box::new(e);
        let ops = proptest::sample::select(vec![
            BinaryOp::Add,
            BinaryOp::Sub,
            BinaryOp::Mul,
            BinaryOp::Div,
            BinaryOp::Mod,
            BinaryOp::Eq,
            BinaryOp::Ne,
            BinaryOp::Lt,
            BinaryOp::Le,
            BinaryOp::Gt,
            BinaryOp::Ge,
            BinaryOp::And,
            BinaryOp::Or,
        ]);
        prop_oneof![
            (ops, inner.clone(), inner.clone()).prop_map(move |(op, l, r)| Expr::Binary(
                op,
                b(l),
                b(r)
            )),
            inner.clone().prop_map(move |e| Expr::Not(b(e))),
            (any::<bool>(), inner.clone()).prop_map(move |(neg, e)| Expr::Unary(
                if neg { UnaryOp::Neg } else { UnaryOp::Plus },
                b(e)
            )),
            (inner.clone(), any::<bool>()).prop_map(move |(e, negated)| Expr::IsNull {
                expr: b(e),
                negated
            }),
            (
                inner.clone(),
                proptest::collection::vec(inner.clone(), 1..4),
                any::<bool>()
            )
                .prop_map(move |(e, list, negated)| Expr::In {
                    expr: b(e),
                    list,
                    negated
                }),
            // The parser refuses literal patterns that are not strings and literal escapes that are
            // not one character, so the generator makes only valid ones.
            (
                inner.clone(),
                prop_oneof![
                    ".{0,4}".prop_map(|s| Expr::Literal(Literal::String(s))),
                    property().prop_map(Expr::Property)
                ],
                proptest::option::of(prop_oneof![
                    ".".prop_map(|s| Expr::Literal(Literal::String(s))),
                    property().prop_map(Expr::Property)
                ]),
                any::<bool>(),
            )
                .prop_map(move |(e, p, esc, negated)| Expr::Like {
                    expr: b(e),
                    pattern: b(p),
                    escape: esc.map(b),
                    negated,
                }),
            inner.prop_map(move |e| Expr::PropertyOf(b(e))),
        ]
    })
}

/// Text that looks like SQL often enough to reach deep into the parser.
fn sqlish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("AND ".to_string()),
        Just("OR ".to_string()),
        Just("NOT ".to_string()),
        Just("( ".to_string()),
        Just(") ".to_string()),
        Just("= ".to_string()),
        Just("LIKE ".to_string()),
        Just("ESCAPE ".to_string()),
        Just("IN ".to_string()),
        Just("IS ".to_string()),
        Just("NULL ".to_string()),
        Just("EXISTS ".to_string()),
        Just("sys.Label ".to_string()),
        Just("color ".to_string()),
        Just("'x%' ".to_string()),
        Just("1 ".to_string()),
        Just("/ 0 ".to_string()),
        Just(", ".to_string()),
        Just("- ".to_string()),
        Just("property(".to_string()),
        ".{0,3}",
    ];
    proptest::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn printing_then_parsing_gives_the_same_tree(e in expr()) {
        let printed = e.to_string();
        let reparsed = parse_expression(&printed);
        prop_assert_eq!(reparsed.as_ref(), Ok(&e), "printed: {}", printed);
    }

    #[test]
    fn random_text_never_panics(text in sqlish()) {
        if let Ok(f) = SqlFilter::parse(&text) {
            let _ = f.evaluate(&message());
        }
        if let Ok(a) = SqlAction::parse(&text) {
            let _ = a.apply(&mut message());
        }
    }

    #[test]
    fn random_unicode_never_panics(text in "\\PC{0,64}") {
        if let Ok(f) = SqlFilter::parse(&text) {
            let _ = f.evaluate(&message());
        }
        let _ = SqlAction::parse(&text);
    }

    #[test]
    fn printed_trees_evaluate_without_panicking(e in expr()) {
        if let Ok(f) = SqlFilter::parse(&e.to_string()) {
            let _ = f.evaluate(&message());
        }
    }
}
