//! Per-key budgets: `budget_usd` per `period` on a `[server] api_keys` entry.
//!
//! **Periods** are calendar periods in UTC (`hourly`, `daily`, `weekly` from Monday 00:00,
//! `monthly` from the 1st 00:00); a period's spend is the cost of the traces its key
//! stored in it, so it survives a restart: `Budgets::load` reads it from the trace store's
//! hourly spend table at startup. From then on the running total lives here, in memory.
//!
//! **Reservations.** Before a request of a budgeted key runs, `admit` reserves a worst-case
//! estimate of its cost (`pass_through_worst`, `routed_worst`) and admits it only while the
//! key's spend plus what its requests in flight reserved is below the budget. When the
//! request ends (answered, failed or cancelled) its reservation is settled with what its
//! model calls cost. So whatever the interleaving, spend ≤ budget + one request's
//! estimate: every admitted request starts below the budget, and each costs at most what
//! it reserved as long as the estimate holds. A key whose spend reached its budget is
//! refused (`Refusal::Exceeded`, 429 `budget_exceeded`) until the period resets; one whose
//! remaining budget is reserved by its requests in flight is refused with a short
//! `Retry-After` (`Refusal::Reserved`, 429 `too_many_requests`).
//!
//! **The estimate** is the most one request may cost under the active price profile:
//! calls × the dearest pool model's worst call. A call's input is at most the model's
//! context and, for pass-through, the messages' bytes plus 64 tokens per message for the
//! chat template (no tokenizer makes more tokens than bytes); its output is at most the
//! request's `max_tokens` (else the executor's limits). A routed run makes at most
//! `2 × (max_subtasks + 2)` calls (plan, steps, synthesis, and a rating call before each
//! for policies that ask a model) plus, with check suffixes, per pool model it may climb
//! through: its answer, one program call for `+program`, up to three for `+keep` (its
//! greedy and sampled programs), and the `+retry` programs and `+agree` samples. It follows the executor's call structure (every
//! check call reuses the answer's token limit); a run that spends more than it reserved
//! still has all of its cost settled.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use r2_allocator::Escalation;
use r2_executor::ExecOptions;
use r2_pool::{ApiKeySpec, BudgetPeriod, KeyBudget, Pool};

use crate::traces::{TraceError, TraceStore};

/// Tokens the chat template may add per message.
const TEMPLATE_TOKENS: u64 = 64;
/// Tokens of a routed prompt besides the client's messages and earlier outputs (the
/// executor's and decomposer's instructions and examples).
const INSTRUCTION_TOKENS: u64 = 4096;

/// The start and end (unix seconds) of the `period` holding `t`.
pub fn bounds(period: BudgetPeriod, t: i64) -> (i64, i64) {
    const DAY: i64 = 86_400;
    match period {
        BudgetPeriod::Hourly => {
            let s = t.div_euclid(3600) * 3600;
            (s, s + 3600)
        }
        BudgetPeriod::Daily => {
            let s = t.div_euclid(DAY) * DAY;
            (s, s + DAY)
        }
        BudgetPeriod::Weekly => {
            // 1970-01-01 was a Thursday.
            let days = t.div_euclid(DAY);
            let monday = days - (days + 3).rem_euclid(7);
            (monday * DAY, (monday + 7) * DAY)
        }
        BudgetPeriod::Monthly => {
            let (y, m, _) = civil_from_days(t.div_euclid(DAY));
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            (
                days_from_civil(y, m, 1) * DAY,
                days_from_civil(ny, nm, 1) * DAY,
            )
        }
    }
}

/// `t` (unix seconds) as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc(t: i64) -> String {
    let (y, m, d) = civil_from_days(t.div_euclid(86_400));
    let s = t.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The worst cost of one call on `model` with at most `input` and `output` tokens.
fn worst_call(pool: &Pool, model: usize, input: u64, output: u64) -> f64 {
    let ctx = u64::from(pool.config.models[model].context_length);
    let clamp = |n: u64| n.min(ctx).min(u64::from(u32::MAX)) as u32;
    pool.config.price(model).cost(clamp(input), clamp(output))
}

/// The most a pass-through call on `model` may cost: `prompt_bytes` of message text in
/// `messages` messages, at most `max_tokens` out.
pub fn pass_through_worst(
    pool: &Pool,
    model: usize,
    prompt_bytes: usize,
    messages: usize,
    max_tokens: u32,
) -> f64 {
    let input = prompt_bytes as u64 + TEMPLATE_TOKENS * messages as u64;
    worst_call(pool, model, input, u64::from(max_tokens))
}

/// The most a routed run may cost (see the module docs): `body_bytes` is the request's
/// size, `exec` the run's options (their token limits already capped by the client's
/// `max_tokens`), `escalation` the policy's checks.
pub fn routed_worst(
    pool: &Pool,
    exec: &ExecOptions,
    escalation: Option<Escalation>,
    body_bytes: usize,
) -> f64 {
    let (plan, step, answer) = (
        u64::from(exec.decompose_max_tokens),
        u64::from(exec.step_max_tokens),
        u64::from(exec.answer_max_tokens),
    );
    let subtasks = exec.max_subtasks as u64;
    let input = body_bytes as u64 + INSTRUCTION_TOKENS + plan + subtasks * step + answer;
    let output = plan.max(step).max(answer);
    // Per model climbed through: its answer, the program (`+program`), `+keep`'s programs,
    // the sampled programs (`+retry`) and the samples (`+agree`).
    let climbs = escalation.map_or(0, |e| {
        let keep = if e.keep.is_some() {
            r2_allocator::Keep::MAX_PROGRAMS as u64
        } else {
            0
        };
        let checks = u64::from(e.program) + keep;
        pool.len() as u64 * (1 + checks + e.retries as u64 + e.samples as u64)
    });
    let calls = 2 * (subtasks + 2) + climbs;
    let dearest = (0..pool.len())
        .map(|m| worst_call(pool, m, input, output))
        .fold(0.0, f64::max);
    calls as f64 * dearest
}

/// Why a budgeted key's request was not admitted.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// The period's spend reached the budget; nothing runs until `resets_at`.
    Exceeded {
        budget: KeyBudget,
        spent: f64,
        resets_at: i64,
    },
    /// What is left is reserved by the key's requests in flight.
    Reserved {
        budget: KeyBudget,
        spent: f64,
        reserved: f64,
        in_flight: usize,
    },
}

/// A key's budget as it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub key: String,
    pub budget: KeyBudget,
    pub period_start: i64,
    pub resets_at: i64,
    /// Settled spend in this period.
    pub spent: f64,
    /// Reserved by requests in flight.
    pub reserved: f64,
    pub in_flight: usize,
}

#[derive(Debug, Default)]
struct Running {
    period_start: i64,
    spent: f64,
    reserved: f64,
    in_flight: usize,
}

impl Running {
    /// Start the period holding `now` if it is later than the running one.
    fn roll(&mut self, period: BudgetPeriod, now: i64) {
        let (start, _) = bounds(period, now);
        if start > self.period_start {
            self.period_start = start;
            self.spent = 0.0;
        }
    }
}

/// What time it is, in unix seconds (tests set it).
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The budgeted keys, their limits and running totals.
pub struct Budgets {
    limits: HashMap<String, KeyBudget>,
    running: Mutex<HashMap<String, Running>>,
    clock: Clock,
}

impl std::fmt::Debug for Budgets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budgets")
            .field("limits", &self.limits)
            .finish()
    }
}

impl Budgets {
    /// The budgets of `specs`, each starting from what its key spent so far this period
    /// according to `store`.
    pub fn load(specs: &[ApiKeySpec], store: &TraceStore) -> Result<Self, TraceError> {
        Self::load_with(specs, store, Arc::new(unix_now))
    }

    /// `load` on another clock.
    pub fn load_with(
        specs: &[ApiKeySpec],
        store: &TraceStore,
        clock: Clock,
    ) -> Result<Self, TraceError> {
        let now = clock();
        let mut limits = HashMap::new();
        let mut running = HashMap::new();
        for s in specs {
            let Some(b) = s.budget else { continue };
            if limits.insert(s.name.clone(), b).is_some() {
                continue;
            }
            let (start, _) = bounds(b.period, now);
            let spent = store.key_cost_since(&s.name, start)?;
            running.insert(
                s.name.clone(),
                Running {
                    period_start: start,
                    spent,
                    ..Running::default()
                },
            );
        }
        Ok(Self {
            limits,
            running: Mutex::new(running),
            clock,
        })
    }

    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, Running>) -> R) -> R {
        f(&mut self.running.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn is_empty(&self) -> bool {
        self.limits.is_empty()
    }

    /// Admit a request of `key` that may cost up to `estimate`: `Ok(None)` when the key
    /// has no budget, `Ok(Some(reservation))` when admitted, else why not.
    pub fn admit(
        self: &Arc<Self>,
        key: &str,
        estimate: f64,
    ) -> Result<Option<Reservation>, Refusal> {
        let Some(&budget) = self.limits.get(key) else {
            return Ok(None);
        };
        let now = (self.clock)();
        let estimate = if estimate.is_finite() {
            estimate.max(0.0)
        } else {
            0.0
        };
        self.with(|running| {
            let r = running.entry(key.to_string()).or_default();
            r.roll(budget.period, now);
            if r.spent >= budget.usd {
                return Err(Refusal::Exceeded {
                    budget,
                    spent: r.spent,
                    resets_at: bounds(budget.period, now).1,
                });
            }
            if r.spent + r.reserved >= budget.usd {
                return Err(Refusal::Reserved {
                    budget,
                    spent: r.spent,
                    reserved: r.reserved,
                    in_flight: r.in_flight,
                });
            }
            r.reserved += estimate;
            r.in_flight += 1;
            Ok(Some(Reservation {
                budgets: self.clone(),
                key: key.to_string(),
                amount: estimate,
                done: false,
            }))
        })
    }

    fn settle(&self, key: &str, amount: f64, cost: f64) {
        let Some(&budget) = self.limits.get(key) else {
            return;
        };
        let now = (self.clock)();
        self.with(|running| {
            let r = running.entry(key.to_string()).or_default();
            r.roll(budget.period, now);
            r.reserved = (r.reserved - amount).max(0.0);
            r.in_flight = r.in_flight.saturating_sub(1);
            if r.in_flight == 0 {
                // No drift from float subtraction.
                r.reserved = 0.0;
            }
            if cost.is_finite() && cost > 0.0 {
                r.spent += cost;
            }
        });
    }

    /// Every budgeted key's standing, by name.
    pub fn status(&self) -> Vec<Status> {
        let now = (self.clock)();
        let mut out: Vec<Status> = self.with(|running| {
            self.limits
                .iter()
                .map(|(key, &budget)| {
                    let r = running.entry(key.clone()).or_default();
                    r.roll(budget.period, now);
                    Status {
                        key: key.clone(),
                        budget,
                        period_start: r.period_start,
                        resets_at: bounds(budget.period, now).1,
                        spent: r.spent,
                        reserved: r.reserved,
                        in_flight: r.in_flight,
                    }
                })
                .collect()
        });
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }
}

/// Budget held by one request in flight; `settle` it with the request's cost. Dropped
/// unsettled (a request that never stored a trace), it frees what it held.
#[derive(Debug)]
pub struct Reservation {
    budgets: Arc<Budgets>,
    key: String,
    amount: f64,
    done: bool,
}

impl Reservation {
    pub fn settle(mut self, cost: f64) {
        self.done = true;
        self.budgets.settle(&self.key, self.amount, cost);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.done {
            self.budgets.settle(&self.key, self.amount, 0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use r2_pool::KeySource;

    #[test]
    fn periods_are_utc_calendar_periods() {
        // 2026-03-18 (a Wednesday) 13:45:10 UTC.
        let t = days_from_civil(2026, 3, 18) * 86_400 + 13 * 3600 + 45 * 60 + 10;
        assert_eq!(utc(t), "2026-03-18T13:45:10Z");
        let span = |p| {
            let (s, e) = bounds(p, t);
            (utc(s), utc(e))
        };
        let s = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(
            span(BudgetPeriod::Hourly),
            s("2026-03-18T13:00:00Z", "2026-03-18T14:00:00Z")
        );
        assert_eq!(
            span(BudgetPeriod::Daily),
            s("2026-03-18T00:00:00Z", "2026-03-19T00:00:00Z")
        );
        assert_eq!(
            span(BudgetPeriod::Weekly),
            s("2026-03-16T00:00:00Z", "2026-03-23T00:00:00Z")
        );
        assert_eq!(
            span(BudgetPeriod::Monthly),
            s("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z")
        );
        // December rolls into the next year; a leap February has 29 days.
        let dec = days_from_civil(2027, 12, 31) * 86_400;
        assert_eq!(
            utc(bounds(BudgetPeriod::Monthly, dec).1),
            "2028-01-01T00:00:00Z"
        );
        let feb = days_from_civil(2028, 2, 10) * 86_400;
        assert_eq!(
            utc(bounds(BudgetPeriod::Monthly, feb).1),
            "2028-03-01T00:00:00Z"
        );
        // The first instant of a period belongs to it.
        let (start, _) = bounds(BudgetPeriod::Weekly, t);
        assert_eq!(bounds(BudgetPeriod::Weekly, start).0, start);
        assert_eq!(bounds(BudgetPeriod::Weekly, start - 1).1, start);
        for z in [-800_000, -1, 0, 59, 19_000, 2_000_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
    }

    #[test]
    fn the_estimate_counts_every_call_a_run_may_make() {
        let model = |id: &str, ctx: u32, price: f64| {
            format!("[[models]]\nid = \"{id}\"\nbackend = \"llama_cpp\"\nsource = \"{id}.gguf\"\nparameters = 1\ncontext_length = {ctx}\nprices.compute = {{ input = {price}, output = {price} }}\n")
        };
        let text = format!("{}{}", model("a", 100_000, 1.0), model("b", 1000, 3.0));
        let cfg = r2_pool::PoolConfig::parse(&text, "t.toml", None).unwrap();
        let pool = Pool::uniform(cfg, r2_pool::ScriptedBackend::new(|_| Ok("x".into())));
        // Pass-through: 10 bytes + 64 per message in, 100 out, on the model asked for.
        assert_eq!(pass_through_worst(&pool, 0, 10, 2, 100), 238e-6);
        // ... but never more input than the model's context.
        let b = pool.config.index_of("b").unwrap();
        assert_eq!(pass_through_worst(&pool, b, 1_000_000, 1, 100), 3300e-6);
        let exec = ExecOptions::default();
        let per_call = |input: u64, output: u64| {
            // The dearest of a (1.0/token, large context) and b (3.0/token, 1,000 tokens).
            let a = (input + output) as f64 * 1e-6;
            let b = (input.min(1000) + output) as f64 * 3e-6;
            a.max(b)
        };
        let input = 200 + 4096 + 256 + 5 * 320 + 512;
        let plain = routed_worst(&pool, &exec, None, 200);
        assert!(
            (plain - 14.0 * per_call(input, 512)).abs() < 1e-12,
            "{plain}"
        );
        let (_, checks) = Escalation::split("fixed:a+program+retry:2+agree:3").unwrap();
        let checked = routed_worst(&pool, &exec, checks, 200);
        // Per model: the answer, the program, two sampled programs, three samples.
        let calls = 14.0 + 2.0 * (1.0 + 1.0 + 2.0 + 3.0);
        assert!(
            (checked - calls * per_call(input, 512)).abs() < 1e-12,
            "{checked}"
        );
        // `+keep`: the answer and up to three programs per model.
        let (_, keep) = Escalation::split("fixed:a+keep").unwrap();
        let kept = routed_worst(&pool, &exec, keep, 200);
        let calls = 14.0 + 2.0 * (1.0 + 3.0);
        assert!(
            (kept - calls * per_call(input, 512)).abs() < 1e-12,
            "{kept}"
        );
    }

    #[test]
    fn reservations_bound_concurrent_spend_and_a_new_period_starts_from_zero() {
        let spec = |name: &str, usd| ApiKeySpec {
            name: name.into(),
            source: KeySource::Env("UNUSED".into()),
            admin: false,
            budget: Some(KeyBudget {
                usd,
                period: BudgetPeriod::Daily,
            }),
        };
        use std::sync::atomic::{AtomicI64, Ordering};
        let store = TraceStore::open(None).unwrap();
        let now = Arc::new(AtomicI64::new(1000));
        let n = now.clone();
        let clock: Clock = Arc::new(move || n.load(Ordering::SeqCst));
        let b = Arc::new(Budgets::load_with(&[spec("k", 1.0)], &store, clock).unwrap());
        assert!(b.admit("unbudgeted", 5.0).unwrap().is_none());
        let r1 = b.admit("k", 0.6).unwrap().unwrap();
        let r2 = b.admit("k", 0.6).unwrap().unwrap();
        // 1.2 reserved of 1.0: the next waits for these.
        let refused = b.admit("k", 0.6).unwrap_err();
        assert!(
            matches!(refused, Refusal::Reserved { in_flight: 2, .. }),
            "{refused:?}"
        );
        r1.settle(0.5);
        drop(r2); // frees its reservation without spending
        let st = &b.status()[0];
        assert_eq!((st.spent, st.reserved, st.in_flight), (0.5, 0.0, 0));
        // A run may cost more than it reserved: all of it counts.
        b.admit("k", 0.6).unwrap().unwrap().settle(0.75);
        let refused = b.admit("k", 0.0).unwrap_err();
        assert_eq!(
            refused,
            Refusal::Exceeded {
                budget: KeyBudget {
                    usd: 1.0,
                    period: BudgetPeriod::Daily
                },
                spent: 1.25,
                resets_at: 86_400
            }
        );
        // The next day starts from nothing.
        now.store(86_400, Ordering::SeqCst);
        let r = b.admit("k", 0.1).unwrap().unwrap();
        r.settle(0.1);
        assert_eq!(b.status()[0].spent, 0.1);
    }
}
