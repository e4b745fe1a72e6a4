//! Config.json parsing: paths and fixes in errors, warnings, defaults, topics and rules.

use super::*;

fn queue_json(props: &str) -> String {
    format!(
        r#"{{"UserConfig": {{"Namespaces": [{{"Name": "ns", "Queues": [
            {{"Name": "ok", "Properties": {{}}}},
            {{"Name": "q", "Properties": {props}}}
        ], "Topics": []}}], "Logging": {{"Type": "File"}}}}}}"#
    )
}

fn error_of(json: &str) -> String {
    Config::from_json_str(json).unwrap_err().to_string()
}

#[test]
fn lab_default_equals_the_lab_file() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../lab/servicebus/Config.json");
    let loaded = Config::load(&file).unwrap();
    assert_eq!(Config::lab_default(), loaded);
    let q = &loaded.queues()[0];
    assert_eq!(q.name, "queue-messages");
    assert_eq!(q.properties.lock_duration, Duration::from_secs(60));
    assert_eq!(q.properties.max_delivery_count, 3);
    assert_eq!(
        q.properties.default_message_time_to_live,
        Duration::from_secs(3600)
    );
    assert_eq!(
        q.properties.duplicate_detection_history_time_window,
        Duration::from_secs(20)
    );
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(loaded.logging_type.as_deref(), Some("File"));
}

#[test]
fn bad_lock_duration_names_the_path_and_the_fix() {
    let e = error_of(&queue_json(r#"{"LockDuration": "1 minute"}"#));
    assert_eq!(
        e,
        "UserConfig.Namespaces[0].Queues[1].Properties.LockDuration: expected an ISO-8601 duration like PT1M, \
         got \"1 minute\"; write an ISO-8601 duration such as PT30S, PT5M, PT1H or P1DT2H"
    );
}

#[test]
fn wrong_types_name_the_path() {
    let e = error_of(&queue_json(r#"{"MaxDeliveryCount": "3"}"#));
    assert!(
        e.starts_with(
            "UserConfig.Namespaces[0].Queues[1].Properties.MaxDeliveryCount: expected an integer"
        ),
        "{e}"
    );
    let e = error_of(&queue_json(r#"{"MaxDeliveryCount": 0}"#));
    assert!(e.contains("from 1 to 2000, got 0"), "{e}");
    let e = error_of(&queue_json(r#"{"RequiresDuplicateDetection": "yes"}"#));
    assert!(
        e.contains("Properties.RequiresDuplicateDetection: expected true or false, got \"yes\""),
        "{e}"
    );
    let e = error_of(&queue_json(r#"{"ForwardTo": 5}"#));
    assert!(
        e.contains("Properties.ForwardTo: expected a string, got 5"),
        "{e}"
    );
    let e = error_of(&queue_json(r#"{"LockDuration": "PT10M"}"#));
    assert!(
        e.contains("LockDuration: 600s is out of range; use a lock duration between PT1S and PT5M"),
        "{e}"
    );
}

#[test]
fn structure_errors_name_the_path() {
    assert!(error_of("{}").starts_with("UserConfig: missing;"));
    assert!(
        error_of(r#"{"UserConfig": {"Namespaces": {}}}"#)
            .starts_with("UserConfig.Namespaces: expected an array, got an object")
    );
    assert!(
        error_of(r#"{"UserConfig": {"Namespaces": []}}"#)
            .starts_with("UserConfig.Namespaces: is empty")
    );
    let e = error_of(
        r#"{"UserConfig": {"Namespaces": [{"Name": "n", "Queues": [{"Properties": {}}]}]}}"#,
    );
    assert!(
        e.starts_with("UserConfig.Namespaces[0].Queues[0].Name: missing; give the queue a name"),
        "{e}"
    );
    let e =
        error_of(r#"{"UserConfig": {"Namespaces": [{"Name": "n", "Queues": [{"Name": "a/b"}]}]}}"#);
    assert!(
        e.contains("Queues[0].Name: \"a/b\" is not a valid queue name"),
        "{e}"
    );
    let e = error_of(
        r#"{"UserConfig": {"Namespaces": [{"Name": "n", "Queues": [{"Name": "A"}, {"Name": "a"}]}]}}"#,
    );
    assert!(e.starts_with("UserConfig.Namespaces[0].Queues[1].Name: duplicate queue name \"a\" (also UserConfig.Namespaces[0].Queues[0]"), "{e}");
    let e = error_of("{\"UserConfig\": ");
    assert!(e.starts_with("is not valid JSON: EOF while parsing"), "{e}");
}

#[test]
fn unsupported_but_set_properties_are_warnings() {
    let json = r#"{"UserConfig": {"Namespaces": [{"Name": "ns", "Queues": [{"Name": "q", "Properties": {
        "ForwardTo": "other", "ForwardDeadLetteredMessagesTo": "", "RequiresSession": true, "Colour": "blue"}},
        {"Name": "other"}],
        "Topics": [{"Name": "t"}]}]}}"#;
    let config = Config::from_json_str(json).unwrap();
    let paths: Vec<_> = config.warnings.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "UserConfig.Namespaces[0].Queues[0].Properties.Colour",
            "UserConfig.Namespaces[0].Topics[0].Subscriptions",
        ]
    );
    assert_eq!(
        config.queues()[0].properties.forward_to.as_deref(),
        Some("other")
    );
    // RequiresSession is served, so it is no longer warned about.
    assert!(config.queues()[0].properties.requires_session);
    assert_eq!(
        config.queues()[0]
            .properties
            .forward_dead_lettered_messages_to,
        None
    );
}

#[test]
fn forwarding_targets_must_exist_and_not_loop() {
    let ns = |queues: &str| {
        format!(r#"{{"UserConfig": {{"Namespaces": [{{"Name": "ns", "Queues": [{queues}]}}]}}}}"#)
    };
    let e = error_of(&ns(
        r#"{"Name": "a", "Properties": {"ForwardTo": "nope"}}, {"Name": "b"}"#,
    ));
    assert_eq!(
        e,
        "UserConfig.Namespaces[0].Queues[0].Properties.ForwardTo: \"nope\" is not a queue of this \
         namespace; name one of: a, b; or leave it empty"
    );
    let e = error_of(&ns(
        r#"{"Name": "a", "Properties": {"ForwardDeadLetteredMessagesTo": "A"}}"#,
    ));
    assert!(
        e.contains("ForwardDeadLetteredMessagesTo: a queue cannot forward to itself"),
        "{e}"
    );
    let e = error_of(&ns(
        r#"{"Name": "a", "Properties": {"ForwardTo": "b"}}, {"Name": "b", "Properties": {"ForwardTo": "c"}},
           {"Name": "c", "Properties": {"ForwardTo": "a"}}"#,
    ));
    assert!(e.starts_with("UserConfig.Namespaces[0].Queues[0].Properties.ForwardTo: forwarding loop a -> b -> c -> a"), "{e}");
    let ok = Config::from_json_str(&ns(
        r#"{"Name": "a", "Properties": {"ForwardTo": "B", "ForwardDeadLetteredMessagesTo": "c"}}, {"Name": "b"}, {"Name": "c"}"#,
    ))
    .unwrap();
    assert!(ok.warnings.is_empty(), "{:?}", ok.warnings);
}

#[test]
fn missing_properties_take_defaults() {
    let config = Config::from_json_str(
        r#"{"UserConfig": {"Namespaces": [{"Name": "n", "Queues": [{"Name": "q"}]}]}}"#,
    )
    .unwrap();
    assert_eq!(config.queues()[0].properties, QueueProperties::default());
}

#[test]
fn load_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("Config.json");
    std::fs::write(&file, queue_json(r#"{"LockDuration": 60}"#)).unwrap();
    let e = Config::load(&file).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "{}: UserConfig.Namespaces[0].Queues[1].Properties.LockDuration: expected",
            file.display()
        )),
        "{e}"
    );
    let e = Config::load(&dir.path().join("missing.json"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("missing.json") && e.contains("check the path given to --config"),
        "{e}"
    );
}

#[test]
fn iso8601_durations() {
    let ok = [
        ("PT1M", 60.0),
        ("PT30S", 30.0),
        ("PT1H", 3600.0),
        ("P1D", 86400.0),
        ("P1DT2H3M4.5S", 93784.5),
        ("PT0.5S", 0.5),
        ("P2W", 1_209_600.0),
        ("P10675199DT2H48M5.4775807S", 922_337_203_685.477),
    ];
    for (text, secs) in ok {
        let d = parse_iso8601_duration(text).unwrap_or_else(|| panic!("{text}"));
        assert!((d.as_secs_f64() - secs).abs() < 1e-3, "{text}: {d:?}");
    }
    for bad in [
        "", "P", "PT", "1M", "PT1", "PTM", "PT1S1M", "P1Y", "P1M", "PT1H1H", "00:01:00", "PT-1S",
    ] {
        assert_eq!(parse_iso8601_duration(bad), None, "{bad}");
    }
}

fn official_sample() -> String {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/official-Config.json");
    std::fs::read_to_string(file).unwrap()
}

#[test]
fn the_official_sample_loads_without_warnings() {
    let config = Config::from_json_str(&official_sample()).unwrap();
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    let topic = &config.topics()[0];
    assert_eq!(topic.name, "topic.1");
    let names: Vec<_> = topic
        .subscriptions
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "subscription.1",
            "subscription.2",
            "subscription.3",
            "subscription.4"
        ]
    );
    let rule = &topic.subscriptions[0].rules[0];
    assert_eq!(rule.name, "app-prop-filter-1");
    assert_eq!(
        rule.filter,
        Filter::Correlation(CorrelationFilter {
            content_type: Some("application/json".into()),
            ..Default::default()
        })
    );
    assert_eq!(topic.subscriptions[2].rules, [Rule::default_rule()]);
    let sql = &topic.subscriptions[3].rules[0];
    assert_eq!(
        sql.filter.to_string(),
        "SqlFilter 'sys.MessageId = '123456' AND userProp1 = 'value1''"
    );
    assert_eq!(sql.action.as_ref().unwrap().text(), "SET sys.To = 'Entity'");
    assert_eq!(topic.subscriptions[0].properties.max_delivery_count, 3);
}

fn topic_json(rules: &str) -> String {
    format!(
        r#"{{"UserConfig": {{"Namespaces": [{{"Name": "ns", "Queues": [], "Topics": [
            {{"Name": "t", "Subscriptions": [{{"Name": "s", "Rules": {rules}}}]}}]}}]}}}}"#
    )
}

#[test]
fn rule_errors_name_the_path() {
    let e = error_of(&topic_json(
        r#"[{"Name": "r", "Properties": {"FilterType": "Regex"}}]"#,
    ));
    assert_eq!(
        e,
        "UserConfig.Namespaces[0].Topics[0].Subscriptions[0].Rules[0].Properties.FilterType: \
         unknown filter type \"Regex\"; use \"Sql\" or \"Correlation\""
    );
    let e = error_of(&topic_json(
        r#"[{"Name": "r", "Properties": {"FilterType": "Sql", "SqlFilter": {"SqlExpression": "a = = 1"}}}]"#,
    ));
    assert_eq!(
        e,
        "UserConfig.Namespaces[0].Topics[0].Subscriptions[0].Rules[0].Properties.SqlFilter.SqlExpression: \
         syntax error at position 5: expected a value, a property or '(', found '='; fix the SQL expression"
    );
    // The official emulator's issue #93: the expression directly under Properties.
    let e = error_of(&topic_json(
        r#"[{"Name": "r", "Properties": {"FilterType": "SQL", "SqlExpression": "a = 1"}}]"#,
    ));
    assert!(e.starts_with("UserConfig.Namespaces[0].Topics[0].Subscriptions[0].Rules[0].Properties.SqlFilter.SqlExpression: missing; put the expression in"), "{e}");
    let e = error_of(&topic_json(
        r#"[{"Name": "r", "Properties": {"FilterType": "Sql", "SqlFilter": {"SqlExpression": "a = 1"},
            "Action": {"SqlExpression": "SET sys.SequenceNumber = 1"}}}]"#,
    ));
    assert!(
        e.contains("Rules[0].Properties.Action.SqlExpression: syntax error at position 5"),
        "{e}"
    );
    let e = error_of(&topic_json(
        r#"[{"Name": "r", "Properties": {"FilterType": "Correlation", "CorrelationFilter": {}}}]"#,
    ));
    assert!(
        e.contains("Rules[0].Properties.CorrelationFilter: has no properties"),
        "{e}"
    );
    let e = error_of(&topic_json(
        r#"[{"Name": "r", "Properties": {"FilterType": "Correlation", "CorrelationFilter": {"Label": 5}}}]"#,
    ));
    assert!(
        e.contains("CorrelationFilter.Label: expected a string, got 5"),
        "{e}"
    );
    let e = error_of(&topic_json(
        r#"[{"Name": "r", "Properties": {"FilterType": "Sql", "SqlFilter": {"SqlExpression": "1=1"}}},
            {"Name": "R", "Properties": {"FilterType": "Sql", "SqlFilter": {"SqlExpression": "1=1"}}}]"#,
    ));
    assert!(
        e.contains("Rules[1].Name: duplicate rule name \"R\""),
        "{e}"
    );
    let e = error_of(&topic_json(r#"{"Name": "r"}"#));
    assert!(
        e.contains("Subscriptions[0].Rules: expected an array, got an object"),
        "{e}"
    );
}

#[test]
fn topics_share_the_namespace_with_queues_and_rules_default() {
    let e = error_of(
        r#"{"UserConfig": {"Namespaces": [{"Name": "ns", "Queues": [{"Name": "x"}], "Topics": [{"Name": "X", "Subscriptions": [{"Name": "s"}]}]}]}}"#,
    );
    assert!(
        e.contains("Topics[0].Name: \"X\" is also the name of"),
        "{e}"
    );
    let config = Config::from_json_str(&topic_json("[]")).unwrap();
    assert_eq!(
        config.topics()[0].subscriptions[0].rules,
        [Rule::default_rule()]
    );
    let e = error_of(
        r#"{"UserConfig": {"Namespaces": [{"Name": "ns", "Topics": [{"Name": "t", "Subscriptions": [{"Name": "s", "Properties": {"ForwardTo": "t"}}]}]}]}}"#,
    );
    assert!(
        e.contains("a subscription cannot forward to its own topic"),
        "{e}"
    );
}

#[test]
fn comments_are_allowed_and_syntax_errors_keep_their_line() {
    let e = error_of("// a comment\n{\"UserConfig\": }");
    assert!(e.contains("line 2 column 16"), "{e}");
}

#[test]
fn the_builder_declares_topics_in_rust() {
    let config = Config::with_queues(["q"]).topic(
        TopicConfig::new("t")
            .subscription(SubscriptionConfig::new("all"))
            .subscription(
                SubscriptionConfig::new("red").rules([Rule::sql("red", "color = 'red'").unwrap()]),
            ),
    );
    assert_eq!(config.topics()[0].subscriptions.len(), 2);
    assert_eq!(
        config.topics()[0].subscriptions[0].rules,
        [Rule::default_rule()]
    );
}
