//! Routing traces in embedded SQLite, served by `GET /v1/traces/{id}`, listed by
//! `GET /v1/traces` and summed by `GET /v1/spend` (`query`).
//!
//! Writes are taken off the response path: `put` hands the trace to one writer thread and
//! returns; the writer stores whatever has queued up in one transaction. Until a trace is
//! committed it stays in an in-memory map that `get` reads first, so a trace is readable
//! the moment its response has been sent. The queue is bounded: when the writer falls
//! behind, `put` waits for room instead of letting memory grow. `flush` (called on
//! graceful shutdown) returns once everything queued before it is committed. A batch whose
//! commit fails (e.g. a full disk) is logged and dropped, so memory stays bounded.
//!
//! Schema (`PRAGMA user_version`): version 0 is `traces (id, created, model, body)`;
//! version 1 adds `key` (the configured *name* of the API key that made the request, never
//! the key or its digest; NULL without keys and on older rows), `latency_ms` (the request's
//! wall-clock time; NULL on older rows) and an index on `created`. Version 2 adds `spend`:
//! per UTC hour, key name ('' without keys) and pool model, the requests, calls, tokens and
//! cost of the traces created in that hour, updated in the same transaction as the traces
//! (a replaced trace's old usage is taken out first) and filled from the stored traces
//! when a store is migrated. `GET /v1/spend` and the per-key budgets read it instead of
//! every trace. Opening a store migrates it in place, so older trace databases stay
//! readable.

mod query;

pub use query::Page;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, thiserror::Error)]
#[error("trace store: {0}")]
pub struct TraceError(String);

/// Traces waiting for the writer; more than this and `put` waits.
const QUEUE: usize = 4096;
/// At most this many traces per transaction.
const BATCH: usize = 512;

/// The schema version this code writes (see the module docs).
const SCHEMA_VERSION: i64 = 2;

/// Who made a request and how long it took, stored beside its trace.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TraceMeta {
    /// The configured name of the API key that made the request (`[server] api_keys`).
    pub key: Option<String>,
    /// Wall-clock time from the request's arrival to its trace being stored.
    pub latency_ms: Option<f64>,
}

struct Row {
    id: String,
    created: f64,
    model: String,
    body: Arc<str>,
    meta: TraceMeta,
    usage: Vec<Usage>,
}

/// What one trace's model calls on one pool model used.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    pub model: String,
    pub calls: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
}

/// The usage of trace `body` per model (its `steps`), in the order models first appear.
/// Missing or malformed fields count as 0.
pub fn usage(body: &serde_json::Value) -> Vec<Usage> {
    let mut out: Vec<Usage> = Vec::new();
    let steps = body["steps"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    for s in steps {
        let model = s["model"].as_str().unwrap_or("");
        let i = match out.iter().position(|u| u.model == model) {
            Some(i) => i,
            None => {
                out.push(Usage {
                    model: model.to_string(),
                    ..Usage::default()
                });
                out.len() - 1
            }
        };
        let u = &mut out[i];
        u.calls += 1;
        u.input_tokens += s["input_tokens"].as_u64().unwrap_or(0);
        u.output_tokens += s["output_tokens"].as_u64().unwrap_or(0);
        u.cost_usd += s["cost_usd"]
            .as_f64()
            .filter(|c| c.is_finite())
            .unwrap_or(0.0);
    }
    out
}

enum Msg {
    Put(Row),
    Flush(oneshot::Sender<()>),
}

/// Traces handed to the writer and not yet committed, by id: the body and the key name.
type Pending = Mutex<HashMap<String, (Arc<str>, Option<String>)>>;

#[derive(Clone)]
pub struct TraceStore {
    conn: Arc<Mutex<Connection>>,
    pending: Arc<Pending>,
    tx: mpsc::Sender<Msg>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl TraceStore {
    /// Open (creating) the store at `path`; `None` keeps traces in memory.
    pub fn open(path: Option<&Path>) -> Result<Self, TraceError> {
        let e = |e: rusqlite::Error| TraceError(e.to_string());
        let mut conn = match path {
            Some(p) => {
                if let Some(dir) = p.parent() {
                    std::fs::create_dir_all(dir).map_err(|x| TraceError(x.to_string()))?;
                }
                let c = Connection::open(p).map_err(e)?;
                c.pragma_update(None, "journal_mode", "WAL").map_err(e)?;
                // No fsync per commit: in WAL mode a crash of the process loses nothing, a
                // power cut at most the last traces; the database is never corrupted.
                c.pragma_update(None, "synchronous", "NORMAL").map_err(e)?;
                c
            }
            None => Connection::open_in_memory().map_err(e)?,
        };
        migrate(&mut conn).map_err(e)?;
        let conn = Arc::new(Mutex::new(conn));
        let pending: Arc<Pending> = Arc::default();
        let (tx, rx) = mpsc::channel(QUEUE);
        let (wc, wp) = (conn.clone(), pending.clone());
        std::thread::Builder::new()
            .name("r2-traces".into())
            .spawn(move || writer(rx, &wc, &wp))
            .map_err(|x| TraceError(format!("cannot start the trace writer: {x}")))?;
        Ok(Self { conn, pending, tx })
    }

    /// Store `body` as the trace of `id` (replacing an earlier one). Returns once the trace
    /// is readable through `get`; it is committed to the database shortly after.
    pub async fn put(
        &self,
        id: &str,
        model: &str,
        body: &serde_json::Value,
        meta: TraceMeta,
    ) -> Result<(), TraceError> {
        let usage = usage(body);
        let body: Arc<str> = Arc::from(body.to_string());
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        lock(&self.pending).insert(id.to_string(), (body.clone(), meta.key.clone()));
        let row = Row {
            id: id.to_string(),
            created,
            model: model.to_string(),
            body,
            meta,
            usage,
        };
        if self.tx.send(Msg::Put(row)).await.is_err() {
            lock(&self.pending).remove(id);
            return Err(TraceError("the trace writer has stopped".into()));
        }
        Ok(())
    }

    /// The trace `id`; with `only`, just when key `only` made it.
    pub async fn get(
        &self,
        id: &str,
        only: Option<&str>,
    ) -> Result<Option<serde_json::Value>, TraceError> {
        let queued = lock(&self.pending).get(id).cloned();
        let body: Option<String> = match queued {
            Some((b, key)) => (only.is_none() || only == key.as_deref()).then(|| b.to_string()),
            None => {
                let (id, only) = (id.to_string(), only.map(str::to_string));
                self.blocking(move |conn| {
                    conn.query_row(
                        "SELECT body FROM traces WHERE id = ?1 AND (?2 IS NULL OR key = ?2)",
                        params![id, only],
                        |r| r.get(0),
                    )
                    .optional()
                })
                .await?
            }
        };
        Ok(body.and_then(|b| serde_json::from_str(&b).ok()))
    }

    /// The cost of the traces `key` made from `since` (unix seconds, a whole hour) on, as
    /// committed: for loading budgets at startup, before any request.
    pub fn key_cost_since(&self, key: &str, since: i64) -> Result<f64, TraceError> {
        lock(&self.conn)
            .query_row(
                "SELECT TOTAL(cost_usd) FROM spend WHERE key = ?1 AND hour >= ?2",
                params![key, since],
                |r| r.get(0),
            )
            .map_err(|e| TraceError(e.to_string()))
    }

    /// Run `f` on the connection off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, TraceError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || f(&lock(&conn)))
            .await
            .map_err(|e| TraceError(e.to_string()))?
            .map_err(|e| TraceError(e.to_string()))
    }

    /// Wait until every trace put before this call is committed.
    pub async fn flush(&self) -> Result<(), TraceError> {
        let (done, wait) = oneshot::channel();
        let stopped = || TraceError("the trace writer has stopped".into());
        self.tx
            .send(Msg::Flush(done))
            .await
            .map_err(|_| stopped())?;
        wait.await.map_err(|_| stopped())
    }
}

/// The writer thread: block for the first message, take whatever else is queued (up to
/// `BATCH`), commit it in one transaction, then drop the committed traces from `pending`
/// unless a newer trace with the same id arrived meanwhile. Ends when every store handle
/// is dropped, after writing what was queued.
fn writer(mut rx: mpsc::Receiver<Msg>, conn: &Mutex<Connection>, pending: &Pending) {
    while let Some(first) = rx.blocking_recv() {
        let mut rows = Vec::new();
        let mut flushes = Vec::new();
        let mut next = Some(first);
        while let Some(m) = next {
            match m {
                Msg::Put(r) => rows.push(r),
                Msg::Flush(f) => flushes.push(f),
            }
            next = if rows.len() < BATCH {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        if !rows.is_empty() {
            if let Err(e) = commit(&mut lock(conn), &rows) {
                tracing::warn!(error = %e, traces = rows.len(), "traces not stored");
            }
            let mut p = lock(pending);
            for r in &rows {
                if p.get(&r.id).is_some_and(|(b, _)| Arc::ptr_eq(b, &r.body)) {
                    p.remove(&r.id);
                }
            }
        }
        for f in flushes {
            let _ = f.send(());
        }
    }
}

/// Bring the schema to `SCHEMA_VERSION`, in one transaction. Each step checks what is
/// there rather than trusting the version alone, so a half-migrated file cannot exist.
fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let t = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    t.execute_batch(
        "CREATE TABLE IF NOT EXISTS traces (
            id TEXT PRIMARY KEY, created REAL NOT NULL, model TEXT NOT NULL, body TEXT NOT NULL)",
    )?;
    let version: i64 = t.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version < 1 {
        let columns: Vec<String> = t
            .prepare("SELECT name FROM pragma_table_info('traces')")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for (name, kind) in [("key", "TEXT"), ("latency_ms", "REAL")] {
            if !columns.iter().any(|c| c == name) {
                t.execute_batch(&format!("ALTER TABLE traces ADD COLUMN {name} {kind}"))?;
            }
        }
        t.execute_batch("CREATE INDEX IF NOT EXISTS traces_created ON traces (created, id)")?;
    }
    if version < 2 {
        t.execute_batch(
            "CREATE TABLE IF NOT EXISTS spend (
                hour INTEGER NOT NULL, key TEXT NOT NULL, model TEXT NOT NULL,
                requests INTEGER NOT NULL, calls INTEGER NOT NULL,
                input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,
                cost_usd REAL NOT NULL,
                PRIMARY KEY (hour, key, model));
             DELETE FROM spend;
             INSERT INTO spend
             SELECT CAST(t.created / 3600 AS INTEGER) * 3600, COALESCE(t.key, ''),
                    COALESCE(json_extract(s.value, '$.model'), ''),
                    COUNT(DISTINCT t.id), COUNT(*),
                    CAST(TOTAL(json_extract(s.value, '$.input_tokens')) AS INTEGER),
                    CAST(TOTAL(json_extract(s.value, '$.output_tokens')) AS INTEGER),
                    TOTAL(json_extract(s.value, '$.cost_usd'))
             FROM traces t, json_each(t.body, '$.steps') s
             WHERE json_valid(t.body)
             GROUP BY 1, 2, 3",
        )?;
    }
    if version < SCHEMA_VERSION {
        t.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    t.commit()
}

/// Add `sign` × `usage` (one trace's) to the spend table's row for its hour and key.
fn add_usage(
    t: &rusqlite::Transaction<'_>,
    created: f64,
    key: Option<&str>,
    usage: &[Usage],
    sign: i64,
) -> rusqlite::Result<()> {
    let mut upsert = t.prepare_cached(
        "INSERT INTO spend (hour, key, model, requests, calls, input_tokens, output_tokens, cost_usd)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (hour, key, model) DO UPDATE SET
            requests = requests + excluded.requests, calls = calls + excluded.calls,
            input_tokens = input_tokens + excluded.input_tokens,
            output_tokens = output_tokens + excluded.output_tokens,
            cost_usd = cost_usd + excluded.cost_usd",
    )?;
    let hour = (created / 3600.0).floor() as i64 * 3600;
    let n = |v: u64| sign * i64::try_from(v).unwrap_or(i64::MAX);
    for u in usage {
        upsert.execute(params![
            hour,
            key.unwrap_or(""),
            u.model,
            sign,
            n(u.calls),
            n(u.input_tokens),
            n(u.output_tokens),
            sign as f64 * u.cost_usd
        ])?;
    }
    Ok(())
}

fn commit(conn: &mut Connection, rows: &[Row]) -> rusqlite::Result<()> {
    let t = conn.transaction()?;
    {
        let mut insert = t.prepare_cached(
            "INSERT OR REPLACE INTO traces (id, created, model, body, key, latency_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let mut old = t.prepare_cached("SELECT created, key, body FROM traces WHERE id = ?1")?;
        for r in rows {
            let replaced: Option<(f64, Option<String>, String)> = old
                .query_row(params![r.id], |x| Ok((x.get(0)?, x.get(1)?, x.get(2)?)))
                .optional()?;
            if let Some((created, key, body)) = replaced {
                let body = serde_json::from_str(&body).unwrap_or_default();
                add_usage(&t, created, key.as_deref(), &usage(&body), -1)?;
            }
            add_usage(&t, r.created, r.meta.key.as_deref(), &r.usage, 1)?;
            insert.execute(params![
                r.id,
                r.created,
                r.model,
                &*r.body,
                r.meta.key,
                r.meta.latency_ms
            ])?;
        }
    }
    t.commit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn a_trace_is_readable_at_once_and_after_it_is_committed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sqlite");
        let store = TraceStore::open(Some(&path)).unwrap();
        for i in 0..1000 {
            store
                .put(
                    &format!("id-{i}"),
                    "m",
                    &json!({"i": i}),
                    TraceMeta::default(),
                )
                .await
                .unwrap();
            // Readable straight after `put`, whether or not the writer has got to it.
            assert_eq!(
                store.get(&format!("id-{i}"), None).await.unwrap(),
                Some(json!({"i": i}))
            );
        }
        store
            .put("id-7", "m", &json!({"i": "again"}), TraceMeta::default())
            .await
            .unwrap();
        store.flush().await.unwrap();
        assert!(
            lock(&store.pending).is_empty(),
            "flushed traces stay queued"
        );
        drop(store);
        // Everything reached the database: a fresh store on the same file reads it.
        let reopened = TraceStore::open(Some(&path)).unwrap();
        assert_eq!(
            reopened.get("id-999", None).await.unwrap(),
            Some(json!({"i": 999}))
        );
        assert_eq!(
            reopened.get("id-7", None).await.unwrap(),
            Some(json!({"i": "again"}))
        );
        assert_eq!(reopened.get("id-1000", None).await.unwrap(), None);
    }
}
