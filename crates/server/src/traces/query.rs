//! Reading stored traces in bulk: the newest first, a page at a time (`list`), and spend
//! summed per time bucket, key and model (`spend`). Both first wait for the writer to
//! commit what is queued, so they see every trace whose response has been sent.

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Value};

use super::{TraceError, TraceStore};

/// Longest answer a listed trace carries; the whole answer is in the trace itself.
const ANSWER_CHARS: usize = 200;

/// One page of traces, newest first.
#[derive(Debug)]
pub struct Page {
    /// One summary per trace (see `summary`).
    pub data: Vec<Value>,
    /// The cursor for the next (older) page: the id of this page's last trace, when more
    /// traces follow it.
    pub next: Option<String>,
}

impl TraceStore {
    /// Up to `limit` traces, newest first, older than the trace `before` when given, of
    /// key `only` when given. `Ok(None)` when `before` names no such trace.
    pub async fn list(
        &self,
        limit: usize,
        before: Option<&str>,
        only: Option<&str>,
    ) -> Result<Option<Page>, TraceError> {
        self.flush().await?;
        let before = before.map(str::to_string);
        let only = only.map(str::to_string);
        self.blocking(move |conn| list(conn, limit, before.as_deref(), only.as_deref()))
            .await
    }

    /// Cost, tokens, calls and requests per (bucket start, key, model) for the traces
    /// created at or after `since` (unix seconds, a whole hour), in buckets of `bucket_s`
    /// seconds (a multiple of an hour; UTC), of key `only` when given. Model is each step's
    /// pool model, so one routed request counts towards every model it called; cost is
    /// what each call was priced at when it ran. Read from the hourly `spend` table.
    pub async fn spend(
        &self,
        since: i64,
        bucket_s: i64,
        only: Option<&str>,
    ) -> Result<Vec<Value>, TraceError> {
        self.flush().await?;
        let only = only.map(str::to_string);
        self.blocking(move |conn| spend(conn, since, bucket_s, only.as_deref()))
            .await
    }
}

fn list(
    conn: &Connection,
    limit: usize,
    before: Option<&str>,
    only: Option<&str>,
) -> rusqlite::Result<Option<Page>> {
    // Ties on `created` are broken by id, so the cursor is a total order.
    let (created, id) = match before {
        Some(id) => {
            let created: Option<f64> = conn
                .query_row(
                    "SELECT created FROM traces WHERE id = ?1 AND (?2 IS NULL OR key = ?2)",
                    params![id, only],
                    |r| r.get(0),
                )
                .optional()?;
            match created {
                Some(c) => (c, id.to_string()),
                None => return Ok(None),
            }
        }
        None => (f64::INFINITY, String::new()),
    };
    let mut stmt = conn.prepare_cached(
        "SELECT id, created, model, key, latency_ms, body FROM traces
         WHERE (created < ?1 OR (created = ?1 AND id < ?2)) AND (?4 IS NULL OR key = ?4)
         ORDER BY created DESC, id DESC LIMIT ?3",
    )?;
    let mut data = stmt
        .query_map(params![created, id, limit as i64 + 1, only], |r| {
            let body: String = r.get(5)?;
            Ok(summary(
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                &body,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let next = if data.len() > limit {
        data.truncate(limit);
        data.last()
            .and_then(|v| v["id"].as_str())
            .map(str::to_string)
    } else {
        None
    };
    Ok(Some(Page { data, next }))
}

/// What the listing shows of one trace: its columns and the parts of its body a table
/// row needs (policy, status, answer cut to `ANSWER_CHARS`, cost, steps, the models called,
/// how many warnings and how many of them are escalations).
fn summary(
    id: String,
    created: f64,
    model: String,
    key: Option<String>,
    latency_ms: Option<f64>,
    body: &str,
) -> Value {
    let t: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let answer = t["answer"].as_str().unwrap_or("");
    let steps = t["steps"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let mut models: Vec<&str> = Vec::new();
    for m in steps.iter().filter_map(|s| s["model"].as_str()) {
        if !models.contains(&m) {
            models.push(m);
        }
    }
    let warnings = t["warnings"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let escalations = warnings
        .iter()
        .filter_map(Value::as_str)
        .filter(|w| w.contains("escalated to"))
        .count();
    json!({
        "id": id,
        "created": created,
        "model": model,
        "key": key,
        "latency_ms": latency_ms,
        "policy": t["policy"],
        "status": t["status"].as_str().unwrap_or("ok"),
        "answer": answer.chars().take(ANSWER_CHARS).collect::<String>(),
        "answer_truncated": answer.chars().nth(ANSWER_CHARS).is_some(),
        "total_cost_usd": t["total_cost_usd"],
        "steps": steps.len(),
        "models": models,
        "warnings": warnings.len(),
        "escalations": escalations,
    })
}

fn spend(
    conn: &Connection,
    since: i64,
    bucket_s: i64,
    only: Option<&str>,
) -> rusqlite::Result<Vec<Value>> {
    let mut stmt = conn.prepare_cached(
        "SELECT (hour / ?2) * ?2 AS start, key, model,
                SUM(requests), SUM(calls), SUM(input_tokens), SUM(output_tokens), TOTAL(cost_usd)
         FROM spend
         WHERE hour >= ?1 AND (?3 IS NULL OR key = ?3)
         GROUP BY start, key, model HAVING SUM(calls) > 0
         ORDER BY start, key, model",
    )?;
    let rows = stmt.query_map(params![since, bucket_s.max(3600), only], |r| {
        let key: String = r.get(1)?;
        Ok(json!({
            "start": r.get::<_, i64>(0)?,
            "key": (!key.is_empty()).then_some(key),
            "model": r.get::<_, String>(2)?,
            "requests": r.get::<_, i64>(3)?,
            "calls": r.get::<_, i64>(4)?,
            "input_tokens": r.get::<_, i64>(5)?.max(0),
            "output_tokens": r.get::<_, i64>(6)?.max(0),
            "cost_usd": r.get::<_, f64>(7)?,
        }))
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::super::TraceMeta;
    use super::*;
    use serde_json::json;

    fn trace(model: &str, cost: f64, warnings: &[&str]) -> Value {
        json!({"policy": "fixed:a", "answer": "42", "total_cost_usd": cost, "warnings": warnings,
               "steps": [{"id": "1", "model": model, "input_tokens": 3, "output_tokens": 4, "cost_usd": cost}]})
    }

    #[tokio::test]
    async fn lists_newest_first_a_page_at_a_time_and_sums_spend_per_key_and_model() {
        let store = TraceStore::open(None).unwrap();
        for i in 0..5 {
            let key = (i % 2 == 0).then(|| "alice".to_string());
            let meta = TraceMeta {
                key,
                latency_ms: Some(10.0 * i as f64),
            };
            let w: &[&str] = if i == 4 {
                &[
                    "synthesis: a disagreed with itself on sample 1; escalated to b",
                    "other",
                ]
            } else {
                &[]
            };
            store
                .put(&format!("t{i}"), "r2reasoner", &trace("a", 0.5, w), meta)
                .await
                .unwrap();
            // Distinct creation times, in order.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let page = store.list(2, None, None).await.unwrap().unwrap();
        let ids: Vec<&str> = page
            .data
            .iter()
            .map(|v| v["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["t4", "t3"]);
        assert_eq!(page.next.as_deref(), Some("t3"));
        let t4 = &page.data[0];
        assert_eq!(
            (
                &t4["key"],
                &t4["latency_ms"],
                &t4["escalations"],
                &t4["warnings"]
            ),
            (&json!("alice"), &json!(40.0), &json!(1), &json!(2))
        );
        assert_eq!(
            (&t4["policy"], &t4["status"], &t4["models"]),
            (&json!("fixed:a"), &json!("ok"), &json!(["a"]))
        );
        let page = store.list(2, Some("t3"), None).await.unwrap().unwrap();
        let ids: Vec<&str> = page
            .data
            .iter()
            .map(|v| v["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["t2", "t1"]);
        let last = store.list(2, Some("t1"), None).await.unwrap().unwrap();
        assert_eq!((last.data.len(), last.next), (1, None));
        assert!(store.list(2, Some("nope"), None).await.unwrap().is_none());
        // One key's view: its own traces only, and no cursor into another key's.
        let own = store.list(10, None, Some("alice")).await.unwrap().unwrap();
        let ids: Vec<&str> = own.data.iter().map(|v| v["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["t4", "t2", "t0"]);
        assert!(store
            .list(10, Some("t3"), Some("alice"))
            .await
            .unwrap()
            .is_none());
        assert!(store.get("t3", Some("alice")).await.unwrap().is_none());
        assert!(store.get("t4", Some("alice")).await.unwrap().is_some());

        let rows = store.spend(0, 86_400, None).await.unwrap();
        let per_key: Vec<(Value, Value, Value)> = rows
            .iter()
            .map(|r| {
                (
                    r["key"].clone(),
                    r["requests"].clone(),
                    r["cost_usd"].clone(),
                )
            })
            .collect();
        assert_eq!(
            per_key,
            [
                (Value::Null, json!(2), json!(1.0)),
                (json!("alice"), json!(3), json!(1.5))
            ]
        );
        assert_eq!(rows[1]["input_tokens"], 9);
        assert!(store
            .spend(i64::MAX / 2, 3600, None)
            .await
            .unwrap()
            .is_empty());
        let alice = store.spend(0, 3600, Some("alice")).await.unwrap();
        assert!(
            !alice.is_empty() && alice.iter().all(|r| r["key"] == "alice"),
            "{alice:?}"
        );
        // Replacing a trace replaces its usage.
        let meta = TraceMeta {
            key: Some("alice".into()),
            latency_ms: None,
        };
        store
            .put("t0", "r2reasoner", &trace("a", 0.25, &[]), meta)
            .await
            .unwrap();
        let rows = store.spend(0, 86_400, Some("alice")).await.unwrap();
        assert_eq!(
            (&rows[0]["requests"], &rows[0]["cost_usd"]),
            (&json!(3), &json!(1.25))
        );
        let start = rows[0]["start"].as_i64().unwrap();
        assert_eq!(store.key_cost_since("alice", start).unwrap(), 1.25);
    }

    #[test]
    fn a_version_0_database_is_migrated_and_its_traces_stay_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sqlite");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE traces (id TEXT PRIMARY KEY, created REAL NOT NULL, model TEXT NOT NULL, body TEXT NOT NULL);",
            )
            .unwrap();
            c.execute(
                "INSERT INTO traces VALUES ('old', 100.0, 'r2reasoner', ?1)",
                params![trace("a", 0.25, &[]).to_string()],
            )
            .unwrap();
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let store = TraceStore::open(Some(&path)).unwrap();
            assert_eq!(
                store.get("old", None).await.unwrap().unwrap()["answer"],
                "42"
            );
            let page = store.list(10, None, None).await.unwrap().unwrap();
            assert_eq!(
                (&page.data[0]["key"], &page.data[0]["latency_ms"]),
                (&Value::Null, &Value::Null)
            );
            let meta = TraceMeta {
                key: Some("ci".into()),
                latency_ms: Some(1.0),
            };
            store
                .put("new", "m", &trace("b", 1.0, &[]), meta)
                .await
                .unwrap();
            let rows = store.spend(0, 3600, None).await.unwrap();
            assert_eq!(rows.len(), 2, "{rows:?}");
            // The old trace's usage was filled in when the store was migrated.
            assert_eq!(
                (&rows[0]["start"], &rows[0]["key"], &rows[0]["cost_usd"]),
                (&json!(0), &Value::Null, &json!(0.25))
            );
        });
        let c = Connection::open(&path).unwrap();
        let version: i64 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, 2);
        // Opening again is a no-op.
        drop(c);
        drop(TraceStore::open(Some(&path)).unwrap());
    }
}
