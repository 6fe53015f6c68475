//! Prometheus metrics, rendered in the text exposition format. Counters live behind one
//! mutex: updates are a few map operations per request, far below the cost of a request.
//! Label values are bounded: routes and models come from the app and the pool, key names
//! from `[server] api_keys` (a request without a key adds no per-key series). Like spend,
//! a key sees only its own per-key series, an admin key everyone's.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use r2_executor::StepTrace;

use crate::budget::Status;
use crate::traces::Usage;

const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 120.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(String, u16), u64>,
    latency: BTreeMap<String, Histogram>,
    tokens: BTreeMap<(String, &'static str), u64>,
    cost: BTreeMap<String, f64>,
    decisions: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
    /// (key name, model) → (input tokens, output tokens, cost) of every stored trace.
    keys: BTreeMap<(String, String), (u64, u64, f64)>,
}

/// A per-key budget gauge: name, help, value.
type Gauge = (&'static str, &'static str, fn(&Status) -> f64);

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    pub fn request(&self, route: &str, status: u16, seconds: f64) {
        self.with(|m| {
            *m.requests.entry((route.to_string(), status)).or_default() += 1;
            let h = m.latency.entry(route.to_string()).or_default();
            for (i, b) in BUCKETS.iter().enumerate() {
                if seconds <= *b {
                    h.counts[i] += 1;
                }
            }
            h.sum += seconds;
            h.count += 1;
        });
    }

    pub fn error(&self, kind: &str) {
        self.with(|m| *m.errors.entry(kind.to_string()).or_default() += 1);
    }

    /// Tokens, cost and one routing decision per model call.
    pub fn steps(&self, steps: &[StepTrace]) {
        self.with(|m| {
            for s in steps {
                *m.tokens.entry((s.model.clone(), "input")).or_default() += s.input_tokens as u64;
                *m.tokens.entry((s.model.clone(), "output")).or_default() += s.output_tokens as u64;
                *m.cost.entry(s.model.clone()).or_default() += s.cost_usd;
                *m.decisions.entry(s.model.clone()).or_default() += 1;
            }
        });
    }

    /// One stored trace of key `key`: its usage per model.
    pub fn key_usage(&self, key: &str, usage: &[Usage]) {
        self.with(|m| {
            for u in usage {
                let e = m
                    .keys
                    .entry((key.to_string(), u.model.clone()))
                    .or_default();
                e.0 += u.input_tokens;
                e.1 += u.output_tokens;
                e.2 += u.cost_usd;
            }
        });
    }

    /// The text exposition, with `budgets` (every budgeted key's standing) as gauges. With
    /// `only`, the per-key series are only that key's.
    pub fn render(&self, budgets: &[Status], only: Option<&str>) -> String {
        let shown = |key: &str| only.is_none_or(|k| k == key);
        let mut o = self.with(|m| {
            let mut o = String::new();
            let _ = writeln!(o, "# HELP r2_requests_total HTTP requests by route and status.\n# TYPE r2_requests_total counter");
            for ((route, status), n) in &m.requests {
                let _ = writeln!(o, "r2_requests_total{{route=\"{}\",status=\"{status}\"}} {n}", escape(route));
            }
            let _ = writeln!(o, "# HELP r2_request_duration_seconds Request latency by route.\n# TYPE r2_request_duration_seconds histogram");
            for (route, h) in &m.latency {
                let r = escape(route);
                for (i, b) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(o, "r2_request_duration_seconds_bucket{{route=\"{r}\",le=\"{b}\"}} {}", h.counts[i]);
                }
                let _ = writeln!(o, "r2_request_duration_seconds_bucket{{route=\"{r}\",le=\"+Inf\"}} {}", h.count);
                let _ = writeln!(o, "r2_request_duration_seconds_sum{{route=\"{r}\"}} {}", h.sum);
                let _ = writeln!(o, "r2_request_duration_seconds_count{{route=\"{r}\"}} {}", h.count);
            }
            let _ = writeln!(o, "# HELP r2_tokens_total Tokens by model and direction.\n# TYPE r2_tokens_total counter");
            for ((model, dir), n) in &m.tokens {
                let _ = writeln!(o, "r2_tokens_total{{model=\"{}\",direction=\"{dir}\"}} {n}", escape(model));
            }
            let _ = writeln!(o, "# HELP r2_cost_usd_total Cost by model under the active price profile.\n# TYPE r2_cost_usd_total counter");
            for (model, c) in &m.cost {
                let _ = writeln!(o, "r2_cost_usd_total{{model=\"{}\"}} {c}", escape(model));
            }
            let _ = writeln!(o, "# HELP r2_routing_decisions_total Model calls routed to each model.\n# TYPE r2_routing_decisions_total counter");
            for (model, n) in &m.decisions {
                let _ = writeln!(o, "r2_routing_decisions_total{{model=\"{}\"}} {n}", escape(model));
            }
            let _ = writeln!(o, "# HELP r2_errors_total Error responses by kind.\n# TYPE r2_errors_total counter");
            for (kind, n) in &m.errors {
                let _ = writeln!(o, "r2_errors_total{{kind=\"{}\"}} {n}", escape(kind));
            }
            let _ = writeln!(o, "# HELP r2_key_tokens_total Tokens by API key name, model and direction, since the server started.\n# TYPE r2_key_tokens_total counter");
            for ((key, model), (i, out, _)) in m.keys.iter().filter(|((k, _), _)| shown(k)) {
                let (k, md) = (escape(key), escape(model));
                let _ = writeln!(o, "r2_key_tokens_total{{key=\"{k}\",model=\"{md}\",direction=\"input\"}} {i}");
                let _ = writeln!(o, "r2_key_tokens_total{{key=\"{k}\",model=\"{md}\",direction=\"output\"}} {out}");
            }
            let _ = writeln!(o, "# HELP r2_key_cost_usd_total Cost by API key name and model, since the server started.\n# TYPE r2_key_cost_usd_total counter");
            for ((key, model), (_, _, c)) in m.keys.iter().filter(|((k, _), _)| shown(k)) {
                let _ = writeln!(o, "r2_key_cost_usd_total{{key=\"{}\",model=\"{}\"}} {c}", escape(key), escape(model));
            }
            o
        });
        let gauges: [Gauge; 4] = [
            ("r2_key_budget_usd", "A key's budget per period.", |s| {
                s.budget.usd
            }),
            (
                "r2_key_spend_usd",
                "What a key spent in its current budget period (restarts included).",
                |s| s.spent,
            ),
            (
                "r2_key_reserved_usd",
                "Budget reserved by a key's requests in flight.",
                |s| s.reserved,
            ),
            (
                "r2_key_budget_reset_timestamp_seconds",
                "When a key's budget period ends (unix seconds).",
                |s| s.resets_at as f64,
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge");
            for s in budgets.iter().filter(|s| shown(&s.key)) {
                let _ = writeln!(
                    o,
                    "{name}{{key=\"{}\",period=\"{}\"}} {}",
                    escape(&s.key),
                    s.budget.period.as_str(),
                    value(s)
                );
            }
        }
        o
    }
}
