//! Prometheus metrics, rendered in the text exposition format. Counters live behind one
//! mutex: updates are a few map operations per request, far below the cost of a request.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use r2_executor::StepTrace;

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
}

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

    pub fn render(&self) -> String {
        self.with(|m| {
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
            o
        })
    }
}
