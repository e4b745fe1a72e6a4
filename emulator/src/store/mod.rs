//! `--data-dir`: the durable copy of the broker's state, in one [redb] file (`emulator.redb`).
//!
//! Why redb: one pure-Rust crate (no C, three packages), ACID transactions with copy-on-write pages
//! and checksums, a stable file format, and crash recovery of its own: after a kill -9 the file opens
//! at its last committed transaction (redb "repairs" it; we log that), and damage it cannot repair is
//! an error at open. A hand-written append-only log would need all of that written and proven here.
//!
//! The store knows nothing of queues: it keeps rows the broker hands it ([`Op`]) and gives them back
//! at start ([`Opened`]). Writes go through one writer thread that commits everything waiting in one
//! transaction (group commit, fsync per commit: redb's `Durability::Immediate`), then publishes how far
//! it got; callers that acknowledge something to a client first wait for that ([`Store::durable`]).
//!
//! Rows (keys use the entity's lower-cased path, `q` or `t/subscriptions/s`):
//! - `messages`: (entity, part, sequence number) → the message and its broker state ([`MessageRecord`]);
//!   part 0 is the entity, 1 its dead-letter queue, 2 a topic's scheduled messages.
//! - `sequences`: entity → the next sequence number.
//! - `duplicates`: (entity, message-id) → (sequence number, when it was seen).
//! - `sessions`: (entity, folded session id) → the session's id, state and when it was set.
//! - `meta`: the format version, and the entity definitions the broker keeps (JSON).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Instant;

use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::watch;

#[cfg(test)]
mod tests;

/// The file inside the data directory.
pub const FILE_NAME: &str = "emulator.redb";

/// Bumped when the rows change meaning; an unknown version is refused rather than misread.
const FORMAT: &str = "1";

/// Parts of an entity, the second element of a message key.
pub const PART_MAIN: u8 = 0;
pub const PART_DEAD_LETTER: u8 = 1;
pub const PART_TOPIC_SCHEDULED: u8 = 2;

type MessageKey<'a> = (&'a str, u8, i64);
/// (raw, annotations, enqueued ms, expires ms, delivery count, state, scheduled ms, dead-letter
/// source, session)
type MessageRow<'a> = (
    &'a [u8],
    &'a [u8],
    i64,
    Option<i64>,
    u32,
    u8,
    Option<i64>,
    Option<&'a str>,
    Option<&'a str>,
);

const MESSAGES: TableDefinition<MessageKey, MessageRow> = TableDefinition::new("messages");
const SEQUENCES: TableDefinition<&str, i64> = TableDefinition::new("sequences");
const DUPLICATES: TableDefinition<(&str, &str), (i64, i64)> = TableDefinition::new("duplicates");
/// (id as named, state, updated ms)
type SessionRow<'a> = (&'a str, Option<&'a [u8]>, Option<i64>);
const SESSIONS: TableDefinition<(&str, &str), SessionRow> = TableDefinition::new("sessions");
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");

const META_FORMAT: &str = "format";
const META_ENTITIES: &str = "entities";

/// Where a stored message stands. Times are milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordState {
    Available,
    Scheduled {
        at_ms: i64,
    },
    Deferred,
    /// Locked by a receiver when written; at start it counts as an expired lock.
    Locked {
        deferred: bool,
    },
}

impl RecordState {
    fn code(self) -> (u8, Option<i64>) {
        match self {
            RecordState::Available => (0, None),
            RecordState::Scheduled { at_ms } => (1, Some(at_ms)),
            RecordState::Deferred => (2, None),
            RecordState::Locked { deferred: false } => (3, None),
            RecordState::Locked { deferred: true } => (4, None),
        }
    }

    fn from_code(code: u8, at_ms: Option<i64>) -> Option<RecordState> {
        Some(match (code, at_ms) {
            (0, _) => RecordState::Available,
            (1, Some(at_ms)) => RecordState::Scheduled { at_ms },
            (2, _) => RecordState::Deferred,
            (3, _) => RecordState::Locked { deferred: false },
            (4, _) => RecordState::Locked { deferred: true },
            _ => return None,
        })
    }
}

/// One message as stored: the client's bytes, the annotations the broker merged into it (abandon and
/// defer `properties-to-modify`, as an encoded message-annotations section), and its broker state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    pub raw: Bytes,
    pub annotations: Bytes,
    pub enqueued_ms: i64,
    pub expires_ms: Option<i64>,
    pub delivery_count: u32,
    pub state: RecordState,
    pub deadletter_source: Option<String>,
    /// The folded session id on a session-enabled entity.
    pub session: Option<String>,
}

/// A session's state as stored (locks are not: a restart releases them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The id as the client first named it.
    pub id: String,
    pub state: Option<Bytes>,
    pub updated_ms: Option<i64>,
}

/// One change, applied in the order submitted.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    PutMessage {
        entity: Arc<str>,
        part: u8,
        seq: i64,
        record: MessageRecord,
    },
    DeleteMessage {
        entity: Arc<str>,
        part: u8,
        seq: i64,
    },
    PutSequence {
        entity: Arc<str>,
        next: i64,
    },
    PutDuplicate {
        entity: Arc<str>,
        id: String,
        seq: i64,
        at_ms: i64,
    },
    DeleteDuplicate {
        entity: Arc<str>,
        id: String,
    },
    PutSession {
        entity: Arc<str>,
        key: String,
        record: SessionRecord,
    },
    DeleteSession {
        entity: Arc<str>,
        key: String,
    },
    /// The broker's entity definitions (a JSON document it writes and reads).
    PutEntities(String),
    /// Every row of an entity (it was deleted).
    DeleteEntity(Arc<str>),
}

/// Why the store cannot be used. Each names the file and says what to do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("cannot use the data directory {}: {detail}; create it, or pass a writable --data-dir", path.display())]
    Directory { path: PathBuf, detail: String },
    #[error(
        "{} is in use by another emulator process; stop it, or give this one its own --data-dir",
        path.display()
    )]
    InUse { path: PathBuf },
    #[error(
        "{} is damaged ({detail}); the emulator will not start on it and drop data silently: move the file aside (the emulator then starts empty) or restore it from a copy",
        path.display()
    )]
    Damaged { path: PathBuf, detail: String },
    #[error(
        "{} was written by a different emulator version (store format {found}, this one reads {FORMAT}); move it aside or use that version",
        path.display()
    )]
    Format { path: PathBuf, found: String },
    #[error("writing {} failed: {detail}; nothing more is acknowledged until the emulator restarts", path.display())]
    Write { path: PathBuf, detail: String },
}

fn damaged(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Damaged {
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

/// A store opened and recovered, before its writer starts: read what it holds, then [`Opened::start`].
pub struct Opened {
    db: Database,
    path: PathBuf,
    /// Whether redb had to recover the file (it was not closed cleanly).
    pub recovered: bool,
}

impl Opened {
    /// Open (or create) `dir/emulator.redb`. A file left by a crash is recovered to its last commit
    /// (logged); a damaged or foreign file is refused with an error naming it.
    pub fn open(dir: &Path) -> Result<Opened, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Directory {
            path: dir.to_path_buf(),
            detail: e.to_string(),
        })?;
        let path = dir.join(FILE_NAME);
        let started = Instant::now();
        let repaired = Arc::new(AtomicBool::new(false));
        let db = {
            let repaired = repaired.clone();
            let shown = path.display().to_string();
            let mut builder = Database::builder();
            builder
                // The broker keeps every message in memory and reads the file only at start, so a
                // page cache would only add to the process's size.
                .set_cache_size(16 * 1024 * 1024)
                .set_repair_callback(move |_| {
                    if !repaired.swap(true, Ordering::SeqCst) {
                        tracing::warn!(
                            file = %shown,
                            "the store was not closed cleanly (a crash or kill -9); recovering it to its last commit"
                        );
                    }
                });
            builder.create(&path).map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    StoreError::InUse { path: path.clone() }
                }
                // redb reports a file that is not a database (or is cut short) as invalid data.
                redb::DatabaseError::Storage(redb::StorageError::Io(io))
                    if io.kind() == std::io::ErrorKind::InvalidData =>
                {
                    damaged(&path, io)
                }
                redb::DatabaseError::Storage(redb::StorageError::Io(io)) => StoreError::Directory {
                    path: path.clone(),
                    detail: io.to_string(),
                },
                other => damaged(&path, other),
            })?
        };
        let recovered = repaired.load(Ordering::SeqCst);
        if recovered {
            tracing::warn!(
                file = %path.display(),
                ms = started.elapsed().as_millis() as u64,
                "store recovered to its last commit: every acknowledged change is kept, unacknowledged ones are gone"
            );
        }
        let opened = Opened {
            db,
            path,
            recovered,
        };
        opened.prepare()?;
        Ok(opened)
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Create the tables of a new file and check the format of an old one.
    fn prepare(&self) -> Result<(), StoreError> {
        let fail = |e: redb::Error| damaged(&self.path, e);
        let txn = self.db.begin_write().map_err(|e| fail(e.into()))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| fail(e.into()))?;
            let found = meta
                .get(META_FORMAT)
                .map_err(|e| fail(e.into()))?
                .map(|v| v.value().to_string());
            match found {
                None => {
                    meta.insert(META_FORMAT, FORMAT)
                        .map_err(|e| fail(e.into()))?;
                }
                Some(f) if f == FORMAT => {}
                Some(found) => {
                    return Err(StoreError::Format {
                        path: self.path.clone(),
                        found,
                    });
                }
            }
            txn.open_table(MESSAGES).map_err(|e| fail(e.into()))?;
            txn.open_table(SEQUENCES).map_err(|e| fail(e.into()))?;
            txn.open_table(DUPLICATES).map_err(|e| fail(e.into()))?;
            txn.open_table(SESSIONS).map_err(|e| fail(e.into()))?;
        }
        txn.commit().map_err(|e| fail(e.into()))
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T, redb::Error>,
    ) -> Result<T, StoreError> {
        let txn = self
            .db
            .begin_read()
            .map_err(|e| damaged(&self.path, redb::Error::from(e)))?;
        f(&txn).map_err(|e| damaged(&self.path, e))
    }

    /// The entity definitions the broker last wrote.
    pub fn entities(&self) -> Result<Option<String>, StoreError> {
        self.read(|txn| {
            let meta = txn.open_table(META)?;
            Ok(meta.get(META_ENTITIES)?.map(|v| v.value().to_string()))
        })
    }

    /// Every stored message in key order (entity, part, sequence number), without holding them all in
    /// memory twice. A row that does not decode is damage: the error names the file.
    pub fn for_each_message(
        &self,
        mut visit: impl FnMut(&str, u8, i64, MessageRecord),
    ) -> Result<(), StoreError> {
        let path = self.path.clone();
        self.read(|txn| {
            let table = txn.open_table(MESSAGES)?;
            for row in table.iter()? {
                let (key, value) = row?;
                let (entity, part, seq) = key.value();
                let v = value.value();
                let Some(state) = RecordState::from_code(v.5, v.6) else {
                    return Err(redb::Error::Corrupted(format!(
                        "message {entity}/{part}/{seq} has an unknown state {} in {}",
                        v.5,
                        path.display()
                    )));
                };
                visit(
                    entity,
                    part,
                    seq,
                    MessageRecord {
                        raw: Bytes::copy_from_slice(v.0),
                        annotations: Bytes::copy_from_slice(v.1),
                        enqueued_ms: v.2,
                        expires_ms: v.3,
                        delivery_count: v.4,
                        state,
                        deadletter_source: v.7.map(str::to_string),
                        session: v.8.map(str::to_string),
                    },
                );
            }
            Ok(())
        })
    }

    /// entity → next sequence number.
    pub fn sequences(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.read(|txn| {
            let table = txn.open_table(SEQUENCES)?;
            table
                .iter()?
                .map(|row| {
                    let (k, v) = row?;
                    Ok((k.value().to_string(), v.value()))
                })
                .collect()
        })
    }

    /// (entity, message-id, sequence number, seen at ms).
    pub fn duplicates(&self) -> Result<Vec<(String, String, i64, i64)>, StoreError> {
        self.read(|txn| {
            let table = txn.open_table(DUPLICATES)?;
            table
                .iter()?
                .map(|row| {
                    let (k, v) = row?;
                    let ((entity, id), (seq, at)) = (k.value(), v.value());
                    Ok((entity.to_string(), id.to_string(), seq, at))
                })
                .collect()
        })
    }

    /// (entity, folded session id, record).
    pub fn sessions(&self) -> Result<Vec<(String, String, SessionRecord)>, StoreError> {
        self.read(|txn| {
            let table = txn.open_table(SESSIONS)?;
            table
                .iter()?
                .map(|row| {
                    let (k, v) = row?;
                    let ((entity, key), (id, state, updated)) = (k.value(), v.value());
                    Ok((
                        entity.to_string(),
                        key.to_string(),
                        SessionRecord {
                            id: id.to_string(),
                            state: state.map(Bytes::copy_from_slice),
                            updated_ms: updated,
                        },
                    ))
                })
                .collect()
        })
    }

    /// Start the writer thread; from now on the broker submits its changes.
    pub fn start(self) -> Store {
        let (tx, rx) = mpsc::channel();
        let (progress_tx, progress) = watch::channel(Progress::default());
        let path = self.path.clone();
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || write_loop(self.db, self.path, rx, progress_tx))
            .ok();
        if writer.is_none() {
            tracing::error!("cannot start the store's writer thread; nothing will be acknowledged");
        }
        Store {
            inner: Arc::new(StoreInner {
                path,
                sender: Mutex::new(Sender {
                    last: 0,
                    tx: Some(tx),
                }),
                progress,
                writer: Mutex::new(writer),
            }),
        }
    }
}

/// Changes with their place in the commit order; sent when dropped.
#[must_use = "the changes are sent when this is dropped"]
pub struct Pending {
    store: Store,
    ticket: u64,
    ops: Vec<Op>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.store.send(self.ticket, std::mem::take(&mut self.ops));
    }
}

/// How far the writer got.
#[derive(Debug, Clone, Default)]
struct Progress {
    committed: u64,
    failed: Option<Arc<str>>,
}

struct Sender {
    /// The ticket of the last batch submitted.
    last: u64,
    tx: Option<mpsc::Sender<(u64, Vec<Op>)>>,
}

struct StoreInner {
    path: PathBuf,
    sender: Mutex<Sender>,
    progress: watch::Receiver<Progress>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

/// The running store: a cheap handle the broker submits changes to.
#[derive(Clone)]
pub struct Store {
    inner: Arc<StoreInner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish()
    }
}

impl Store {
    /// Queue changes for the next commit. Batches are applied in submission order, so callers submit
    /// while they hold the lock that ordered the changes.
    pub fn submit(&self, ops: Vec<Op>) {
        drop(self.begin(ops));
    }

    /// Take the next place in the commit order for `ops` now, and send them when the [`Pending`] is
    /// dropped (after more changes that must commit with them were submitted: the writer commits in
    /// place order, and everything waiting then goes into one transaction).
    pub fn begin(&self, ops: Vec<Op>) -> Pending {
        let mut sender = self.inner.sender.lock().unwrap_or_else(|p| p.into_inner());
        sender.last += 1;
        Pending {
            store: self.clone(),
            ticket: sender.last,
            ops,
        }
    }

    fn send(&self, ticket: u64, ops: Vec<Op>) {
        let sender = self.inner.sender.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = &sender.tx
            && tx.send((ticket, ops)).is_err()
        {
            tracing::error!("the store's writer has stopped; a change was not saved");
        }
    }
    /// The ticket of the last batch submitted: [`Store::durable`] with it waits for everything so far.
    pub fn submitted(&self) -> u64 {
        self.inner
            .sender
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last
    }

    /// Wait until the batch `ticket` (and all before it) is committed to disk (at once if it is).
    pub async fn durable(&self, ticket: u64) -> Result<(), StoreError> {
        let mut progress = self.inner.progress.clone();
        let seen = progress
            .wait_for(|p| p.committed >= ticket || p.failed.is_some())
            .await
            .map(|p| p.failed.clone());
        match seen {
            Ok(None) => Ok(()),
            Ok(Some(detail)) => Err(StoreError::Write {
                path: self.inner.path.clone(),
                detail: detail.to_string(),
            }),
            // The writer is gone: it failed to start, or the store was closed.
            Err(_) => Err(StoreError::Write {
                path: self.inner.path.clone(),
                detail: "the writer thread has stopped".into(),
            }),
        }
    }

    /// Commit what is queued and close the file cleanly (so the next start needs no recovery).
    pub fn close(&self) {
        self.inner
            .sender
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .tx
            .take();
        let writer = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(writer) = writer {
            let _ = writer.join();
        }
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }
}

/// Commit whatever is queued in one transaction, publish the last ticket committed, repeat until every
/// sender is gone. A failed commit stops the writer: acknowledging after it would be a lie.
fn write_loop(
    db: Database,
    path: PathBuf,
    rx: mpsc::Receiver<(u64, Vec<Op>)>,
    progress: watch::Sender<Progress>,
) {
    // Batches arrive in any order (a place is taken under an entity lock, filled later); they are
    // committed in place order, everything contiguous that is waiting in one transaction.
    let mut waiting: std::collections::BTreeMap<u64, Vec<Op>> = Default::default();
    let mut next = 1;
    while let Ok((ticket, ops)) = rx.recv() {
        waiting.insert(ticket, ops);
        while let Ok((ticket, ops)) = rx.try_recv() {
            waiting.insert(ticket, ops);
        }
        let mut batch = Vec::new();
        while let Some(ops) = waiting.remove(&next) {
            batch.push(ops);
            next += 1;
        }
        if batch.is_empty() {
            continue;
        }
        match commit(&db, batch.iter().flatten()) {
            Ok(()) => progress.send_modify(|p| p.committed = next - 1),
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "the store cannot write; acknowledgements stop");
                progress.send_modify(|p| p.failed = Some(e.to_string().into()));
                return;
            }
        }
    }
    drop(db);
    tracing::debug!(file = %path.display(), "store closed");
}

fn commit<'a>(db: &Database, ops: impl Iterator<Item = &'a Op>) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    {
        let mut messages = txn.open_table(MESSAGES)?;
        let mut sequences = txn.open_table(SEQUENCES)?;
        let mut duplicates = txn.open_table(DUPLICATES)?;
        let mut sessions = txn.open_table(SESSIONS)?;
        let mut meta = txn.open_table(META)?;
        for op in ops {
            match op {
                Op::PutMessage {
                    entity,
                    part,
                    seq,
                    record: r,
                } => {
                    let (code, at) = r.state.code();
                    messages.insert(
                        (&**entity, *part, *seq),
                        (
                            &r.raw[..],
                            &r.annotations[..],
                            r.enqueued_ms,
                            r.expires_ms,
                            r.delivery_count,
                            code,
                            at,
                            r.deadletter_source.as_deref(),
                            r.session.as_deref(),
                        ),
                    )?;
                }
                Op::DeleteMessage { entity, part, seq } => {
                    messages.remove((&**entity, *part, *seq))?;
                }
                Op::PutSequence { entity, next } => {
                    sequences.insert(&**entity, *next)?;
                }
                Op::PutDuplicate {
                    entity,
                    id,
                    seq,
                    at_ms,
                } => {
                    duplicates.insert((&**entity, id.as_str()), (*seq, *at_ms))?;
                }
                Op::DeleteDuplicate { entity, id } => {
                    duplicates.remove((&**entity, id.as_str()))?;
                }
                Op::PutSession {
                    entity,
                    key,
                    record,
                } => {
                    sessions.insert(
                        (&**entity, key.as_str()),
                        (
                            record.id.as_str(),
                            record.state.as_deref(),
                            record.updated_ms,
                        ),
                    )?;
                }
                Op::DeleteSession { entity, key } => {
                    sessions.remove((&**entity, key.as_str()))?;
                }
                Op::PutEntities(json) => {
                    meta.insert(META_ENTITIES, json.as_str())?;
                }
                Op::DeleteEntity(entity) => {
                    let entity: &str = entity;
                    messages.retain_in(
                        (entity, 0, i64::MIN)..=(entity, u8::MAX, i64::MAX),
                        |_, _| false,
                    )?;
                    sequences.remove(entity)?;
                    duplicates.retain(|(e, _), _| e != entity)?;
                    sessions.retain(|(e, _), _| e != entity)?;
                }
            }
        }
    }
    txn.commit()?;
    Ok(())
}
