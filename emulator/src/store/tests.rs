use super::*;

fn record(body: &str, state: RecordState) -> MessageRecord {
    MessageRecord {
        raw: Bytes::from(body.as_bytes().to_vec()),
        annotations: Bytes::from_static(b"\x00\x53\x72\xc1\x01\x00"),
        enqueued_ms: 1_700_000_000_000,
        expires_ms: Some(1_700_000_060_000),
        delivery_count: 2,
        state,
        deadletter_source: Some("q".into()),
        session: Some("s-1".into()),
    }
}

fn messages(opened: &Opened) -> Vec<(String, u8, i64, MessageRecord)> {
    let mut all = Vec::new();
    opened
        .for_each_message(|e, p, s, r| all.push((e.to_string(), p, s, r)))
        .expect("readable");
    all
}

async fn apply(store: &Store, ops: Vec<Op>) {
    store.submit(ops);
    store.durable(store.submitted()).await.expect("committed");
}

#[tokio::test]
async fn what_was_committed_is_there_after_reopen_in_key_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Opened::open(dir.path()).unwrap().start();
    let q: Arc<str> = "q".into();
    let states = [
        RecordState::Available,
        RecordState::Scheduled { at_ms: 5 },
        RecordState::Deferred,
        RecordState::Locked { deferred: false },
        RecordState::Locked { deferred: true },
    ];
    let mut ops: Vec<Op> = states
        .iter()
        .enumerate()
        .map(|(i, s)| Op::PutMessage {
            entity: q.clone(),
            part: PART_MAIN,
            seq: 10 - i as i64,
            record: record(&format!("m{i}"), *s),
        })
        .collect();
    ops.push(Op::DeleteMessage {
        entity: q.clone(),
        part: PART_MAIN,
        seq: 10,
    });
    ops.push(Op::PutSequence {
        entity: q.clone(),
        next: 11,
    });
    ops.push(Op::PutDuplicate {
        entity: q.clone(),
        id: "id-1".into(),
        seq: 9,
        at_ms: 42,
    });
    ops.push(Op::PutSession {
        entity: q.clone(),
        key: "s-1".into(),
        record: SessionRecord {
            id: "S-1".into(),
            state: Some(Bytes::from_static(b"state")),
            updated_ms: Some(7),
        },
    });
    ops.push(Op::PutEntities("[]".into()));
    apply(&store, ops).await;
    store.close();

    let opened = Opened::open(dir.path()).unwrap();
    assert!(!opened.recovered, "a clean close needs no recovery");
    let all = messages(&opened);
    let seqs: Vec<i64> = all.iter().map(|m| m.2).collect();
    assert_eq!(seqs, [6, 7, 8, 9], "sequence order; 10 was deleted");
    assert_eq!(
        all[0].3,
        record("m4", RecordState::Locked { deferred: true })
    );
    assert_eq!(all[2].3.state, RecordState::Deferred);
    assert_eq!(all[3].3.state, RecordState::Scheduled { at_ms: 5 });
    assert_eq!(opened.sequences().unwrap(), [("q".to_string(), 11)]);
    assert_eq!(
        opened.duplicates().unwrap(),
        [("q".to_string(), "id-1".to_string(), 9, 42)]
    );
    let sessions = opened.sessions().unwrap();
    assert_eq!(sessions[0].2.id, "S-1");
    assert_eq!(sessions[0].2.state.as_deref(), Some(&b"state"[..]));
    assert_eq!(opened.entities().unwrap().as_deref(), Some("[]"));
}

#[tokio::test]
async fn deleting_an_entity_removes_its_rows_and_only_its() {
    let dir = tempfile::tempdir().unwrap();
    let store = Opened::open(dir.path()).unwrap().start();
    let mut ops = Vec::new();
    for entity in ["a", "ab", "b"] {
        let entity: Arc<str> = entity.into();
        for part in [PART_MAIN, PART_DEAD_LETTER, PART_TOPIC_SCHEDULED] {
            ops.push(Op::PutMessage {
                entity: entity.clone(),
                part,
                seq: 1,
                record: record("x", RecordState::Available),
            });
        }
        ops.push(Op::PutSequence {
            entity: entity.clone(),
            next: 2,
        });
        ops.push(Op::PutDuplicate {
            entity: entity.clone(),
            id: "d".into(),
            seq: 1,
            at_ms: 1,
        });
    }
    ops.push(Op::DeleteEntity("a".into()));
    apply(&store, ops).await;
    store.close();

    let opened = Opened::open(dir.path()).unwrap();
    let left: Vec<String> = messages(&opened).into_iter().map(|m| m.0).collect();
    assert_eq!(left, ["ab", "ab", "ab", "b", "b", "b"]);
    assert_eq!(opened.sequences().unwrap().len(), 2);
    assert!(opened.duplicates().unwrap().iter().all(|d| d.0 != "a"));
}

#[tokio::test]
async fn a_second_process_on_the_same_directory_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Opened::open(dir.path()).unwrap();
    let err = Opened::open(dir.path()).err().expect("refused");
    let text = err.to_string();
    assert!(matches!(err, StoreError::InUse { .. }), "{text}");
    assert!(
        text.contains(FILE_NAME) && text.contains("--data-dir"),
        "{text}"
    );
}

#[test]
fn a_file_that_is_not_a_store_is_refused_naming_it_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(FILE_NAME);
    let garbage = vec![0x5a_u8; 64 * 1024];
    std::fs::write(&file, &garbage).unwrap();
    let err = Opened::open(dir.path()).err().expect("refused");
    let text = err.to_string();
    assert!(matches!(err, StoreError::Damaged { .. }), "{text}");
    assert!(text.contains(&file.display().to_string()), "{text}");
    assert!(text.contains("move the file aside"), "{text}");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        garbage,
        "the file is not touched"
    );
}

#[tokio::test]
async fn a_store_of_another_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let opened = Opened::open(dir.path()).unwrap();
        let txn = opened.db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(META_FORMAT, "99")
            .unwrap();
        txn.commit().unwrap();
    }
    let err = Opened::open(dir.path()).err().expect("refused");
    assert!(
        matches!(&err, StoreError::Format { found, .. } if found == "99"),
        "{err}"
    );
}

#[tokio::test]
async fn a_directory_that_cannot_be_created_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let err = Opened::open(&blocker.join("data")).err().expect("refused");
    assert!(matches!(err, StoreError::Directory { .. }), "{err}");
    assert!(err.to_string().contains("--data-dir"), "{err}");
}
