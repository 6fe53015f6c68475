//! A persistent cache of model calls. The key is the model (its id and, when known, the
//! sha256 of its weights) plus the full request: every message, the sampling parameters,
//! `max_tokens` and the stop strings. Benchmarks and training re-run identical calls many
//! times; with the cache they cost one generation. Cost is still accounted by the cached
//! response's token counts, so a cached run reports the same cost as a live one.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use r2_pool::{Backend, BackendError, GenRequest, GenResponse};
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("call cache {path}: {reason}")]
    Open { path: String, reason: String },
}

pub struct CallCache {
    conn: Mutex<Connection>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// Counts since the cache was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
}

impl CallCache {
    pub fn open(path: &Path) -> Result<Self, CacheError> {
        let err = |reason: String| CacheError::Open {
            path: path.display().to_string(),
            reason,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        }
        let conn = Connection::open(path).map_err(|e| err(e.to_string()))?;
        Self::init(conn).map_err(|e| err(e.to_string()))
    }

    pub fn in_memory() -> Self {
        Self::init(Connection::open_in_memory().expect("sqlite in memory")).expect("schema")
    }

    fn init(conn: Connection) -> rusqlite::Result<Self> {
        // WAL lets several processes (a bench and a trainer) share one cache file.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS calls (
                key TEXT PRIMARY KEY,
                model TEXT NOT NULL,
                request TEXT NOT NULL,
                response TEXT NOT NULL,
                created_at INTEGER NOT NULL
            );",
        )?;
        Ok(Self {
            conn: Mutex::new(conn),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    /// The cache key: sha256 over the model identity and the canonical JSON of the request.
    pub fn key(model: &str, request: &GenRequest) -> String {
        let mut h = Sha256::new();
        h.update(model.as_bytes());
        h.update([0]);
        h.update(serde_json::to_vec(request).expect("requests serialise"));
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn get(&self, model: &str, request: &GenRequest) -> Option<GenResponse> {
        self.lookup(&Self::key(model, request))
    }

    fn lookup(&self, key: &str) -> Option<GenResponse> {
        let conn = self.conn.lock().ok()?;
        let row: Option<String> = conn
            .query_row(
                "SELECT response FROM calls WHERE key = ?1",
                params![key],
                |r| r.get(0),
            )
            .optional()
            .ok()
            .flatten();
        // A row that no longer parses (older schema, manual edits) is a miss, not an error.
        let hit = row.and_then(|json| serde_json::from_str(&json).ok());
        if hit.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        } else {
            self.misses.fetch_add(1, Ordering::Relaxed);
        }
        hit
    }

    pub fn put(&self, model: &str, request: &GenRequest, response: &GenResponse) {
        self.store(&Self::key(model, request), model, request, response)
    }

    fn store(&self, key: &str, model: &str, request: &GenRequest, response: &GenResponse) {
        let (Ok(req), Ok(resp)) = (
            serde_json::to_string(request),
            serde_json::to_string(response),
        ) else {
            return;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        if let Ok(conn) = self.conn.lock() {
            // A failed write only costs a future regeneration.
            let _ = conn.execute(
                "INSERT OR REPLACE INTO calls (key, model, request, response, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![key, model, req, resp, now],
            );
        }
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    pub fn len(&self) -> usize {
        self.conn
            .lock()
            .ok()
            .and_then(|c| {
                c.query_row("SELECT COUNT(*) FROM calls", [], |r| r.get::<_, i64>(0))
                    .ok()
            })
            .unwrap_or(0) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A backend answered from the cache when it can, else by `inner` (and then remembered).
///
/// Identical calls that arrive while the first is still generating wait for it and are
/// then served from the cache, instead of generating the same answer again (GRPO samples
/// of one question and concurrent bench items share planning and step calls this way).
pub struct CachedBackend {
    inner: Arc<dyn Backend>,
    cache: Arc<CallCache>,
    /// Model identity in the key: the pool id plus the weights' sha256 when pinned, so
    /// swapping the weights behind an id does not serve stale answers.
    identity: String,
    /// One gate per key being generated; removed when its last caller leaves.
    in_flight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// A caller's hold on a key's gate; dropping it (also on cancellation) forgets the gate
/// when no other caller holds it.
struct Turn<'a> {
    map: &'a Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    key: String,
    gate: Arc<tokio::sync::Mutex<()>>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if let Ok(mut map) = self.map.lock() {
            // The map's reference and ours: nobody else is waiting.
            if Arc::strong_count(&self.gate) == 2 {
                map.remove(&self.key);
            }
        }
    }
}

impl CachedBackend {
    pub fn new(
        inner: Arc<dyn Backend>,
        cache: Arc<CallCache>,
        model_id: &str,
        weights_sha256: Option<&str>,
    ) -> Self {
        let identity = match weights_sha256 {
            Some(sha) => format!("{model_id}@{sha}"),
            None => model_id.to_string(),
        };
        Self {
            inner,
            cache,
            identity,
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    fn turn(&self, request: &GenRequest) -> Turn<'_> {
        let key = CallCache::key(&self.identity, request);
        let gate = match self.in_flight.lock() {
            Ok(mut map) => map.entry(key.clone()).or_default().clone(),
            // A poisoned map only loses the sharing, never the call.
            Err(_) => Arc::default(),
        };
        Turn {
            map: &self.in_flight,
            key,
            gate,
        }
    }
}

#[async_trait]
impl Backend for CachedBackend {
    async fn generate(&self, request: &GenRequest) -> Result<GenResponse, BackendError> {
        let turn = self.turn(request);
        // Behind an identical call in flight, this finds its answer.
        let _held = turn.gate.lock().await;
        if let Some(hit) = self.cache.lookup(&turn.key) {
            return Ok(hit);
        }
        let response = self.inner.generate(request).await?;
        self.cache
            .store(&turn.key, &self.identity, request, &response);
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use r2_pool::{ChatMessage, Sampling, ScriptedBackend};

    fn req(text: &str) -> GenRequest {
        GenRequest::new(vec![ChatMessage::user(text)], 16)
    }

    #[tokio::test]
    async fn identical_calls_hit_and_different_ones_miss() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("calls.sqlite");
        let scripted = ScriptedBackend::new(|r| Ok(format!("echo {}", r.messages[0].content)));
        let cache = Arc::new(CallCache::open(&path).unwrap());
        let backend = CachedBackend::new(scripted.clone(), cache.clone(), "m", Some("abc"));

        let a = backend.generate(&req("one")).await.unwrap();
        let b = backend.generate(&req("one")).await.unwrap();
        assert_eq!(a, b);
        assert_eq!(
            scripted.calls(),
            1,
            "the second identical call is served from the cache"
        );
        assert_eq!(cache.stats(), CacheStats { hits: 1, misses: 1 });

        // Any difference in the request is a different call.
        let mut sampled = req("one");
        sampled.sampling = Sampling::Temperature {
            temperature: 0.7,
            seed: 1,
        };
        backend.generate(&sampled).await.unwrap();
        let mut longer = req("one");
        longer.max_tokens = 17;
        backend.generate(&longer).await.unwrap();
        backend.generate(&req("two")).await.unwrap();
        assert_eq!(scripted.calls(), 4);

        // Other weights under the same id miss; the cache survives reopening.
        let other = CachedBackend::new(scripted.clone(), cache.clone(), "m", Some("def"));
        other.generate(&req("one")).await.unwrap();
        assert_eq!(scripted.calls(), 5);
        drop((backend, other, cache));
        let reopened = Arc::new(CallCache::open(&path).unwrap());
        assert_eq!(reopened.len(), 5);
        let backend = CachedBackend::new(scripted.clone(), reopened.clone(), "m", Some("abc"));
        backend.generate(&req("one")).await.unwrap();
        assert_eq!(scripted.calls(), 5);
        assert_eq!(reopened.stats().hits, 1);
    }

    #[tokio::test]
    async fn identical_calls_in_flight_generate_once() {
        let scripted = ScriptedBackend::with_delay(std::time::Duration::from_millis(50), |r| {
            Ok(format!("echo {}", r.messages[0].content))
        });
        let cache = Arc::new(CallCache::in_memory());
        let backend = Arc::new(CachedBackend::new(
            scripted.clone(),
            cache.clone(),
            "m",
            None,
        ));
        let calls: Vec<_> = ["one", "one", "one", "two"]
            .into_iter()
            .map(|t| {
                let b = backend.clone();
                tokio::spawn(async move { b.generate(&req(t)).await })
            })
            .collect();
        let mut answers = Vec::new();
        for c in calls {
            answers.push(c.await.unwrap().unwrap().text);
        }
        assert_eq!(answers, ["echo one", "echo one", "echo one", "echo two"]);
        assert_eq!(scripted.calls(), 2, "one generation per distinct call");
        assert_eq!(
            scripted.max_in_flight(),
            2,
            "different calls still run together"
        );
        assert!(
            backend.in_flight.lock().unwrap().is_empty(),
            "gates are forgotten"
        );

        // A waiter that gives up leaves nothing behind.
        let slow = backend.clone();
        let first = tokio::spawn(async move { slow.generate(&req("three")).await });
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        let three = req("three");
        let waiter = backend.generate(&three);
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(5), waiter)
                .await
                .is_err()
        );
        first.await.unwrap().unwrap();
        assert!(backend.in_flight.lock().unwrap().is_empty());
        assert_eq!(scripted.calls(), 3);
    }

    #[tokio::test]
    async fn failed_calls_are_not_cached() {
        let scripted = ScriptedBackend::new(|_| {
            Err(BackendError::Inference {
                model: "m".into(),
                reason: "boom".into(),
            })
        });
        let cache = Arc::new(CallCache::in_memory());
        let backend = CachedBackend::new(scripted.clone(), cache.clone(), "m", None);
        assert!(backend.generate(&req("x")).await.is_err());
        assert!(backend.generate(&req("x")).await.is_err());
        assert_eq!(scripted.calls(), 2);
        assert!(cache.is_empty());
    }
}
