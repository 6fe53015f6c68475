//! Routing traces in embedded SQLite, served by `GET /v1/traces/{id}`.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension};

#[derive(Debug, thiserror::Error)]
#[error("trace store: {0}")]
pub struct TraceError(String);

#[derive(Clone)]
pub struct TraceStore {
    conn: Arc<Mutex<Connection>>,
}

impl TraceStore {
    /// Open (creating) the store at `path`; `None` keeps traces in memory.
    pub fn open(path: Option<&Path>) -> Result<Self, TraceError> {
        let e = |e: rusqlite::Error| TraceError(e.to_string());
        let conn = match path {
            Some(p) => {
                if let Some(dir) = p.parent() {
                    std::fs::create_dir_all(dir).map_err(|x| TraceError(x.to_string()))?;
                }
                let c = Connection::open(p).map_err(e)?;
                c.pragma_update(None, "journal_mode", "WAL").map_err(e)?;
                // No fsync per request (it was most of the gateway's added latency at
                // 1,000 req/s): in WAL mode a crash of the process loses nothing, a power
                // cut at most the last traces; the database is never corrupted.
                c.pragma_update(None, "synchronous", "NORMAL").map_err(e)?;
                c
            }
            None => Connection::open_in_memory().map_err(e)?,
        };
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS traces (
                id TEXT PRIMARY KEY, created REAL NOT NULL, model TEXT NOT NULL, body TEXT NOT NULL)",
        )
        .map_err(e)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
    ) -> impl std::future::Future<Output = Result<R, TraceError>> {
        let conn = self.conn.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let c = conn.lock().unwrap_or_else(|p| p.into_inner());
                f(&c).map_err(|e| TraceError(e.to_string()))
            })
            .await
            .map_err(|e| TraceError(e.to_string()))?
        }
    }

    pub async fn put(
        &self,
        id: &str,
        model: &str,
        body: &serde_json::Value,
    ) -> Result<(), TraceError> {
        let (id, model, body) = (id.to_string(), model.to_string(), body.to_string());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.blocking(move |c| {
            c.execute(
                "INSERT OR REPLACE INTO traces (id, created, model, body) VALUES (?1, ?2, ?3, ?4)",
                params![id, now, model, body],
            )
            .map(|_| ())
        })
        .await
    }

    pub async fn get(&self, id: &str) -> Result<Option<serde_json::Value>, TraceError> {
        let id = id.to_string();
        let body: Option<String> = self
            .blocking(move |c| {
                c.query_row("SELECT body FROM traces WHERE id = ?1", params![id], |r| {
                    r.get(0)
                })
                .optional()
            })
            .await?;
        Ok(body.and_then(|b| serde_json::from_str(&b).ok()))
    }
}
