//! `POST /v1/chat/completions`: resolve the model name to a pass-through model or a
//! routing policy, run it (bounded by the request timeout), answer in OpenAI's shape.
//! Streaming runs the work in a task that stops — dropping, and so cancelling, the model
//! calls — as soon as the client goes away.
//!
//! A budgeted key's request reserves its worst-case cost before it runs (`budget`; refused
//! with 429 when the key is over budget) and settles it when its trace is stored: every
//! request that ran stores exactly one trace (answered, failed, or cancelled, a
//! non-streamed one whose client went away included), and its steps' cost is what the key
//! spent.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use r2_allocator::Policy;
use r2_decomposer::TaskFamily;
use r2_executor::{Answer, ExecOptions, Executor, StepTrace};
use r2_pool::{GenRequest, Role, Sampling};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::auth::KeyName;
use crate::budget::{self, Reservation};
use crate::error::ApiError;
use crate::traces::{self, TraceMeta};
use crate::wire::{self, Chat};
use crate::AppState;

/// What a model name resolves to.
enum Target {
    /// A pool model, called with the messages as given.
    PassThrough(usize),
    /// The routed pipeline under a policy.
    Routed(Arc<dyn Policy>),
}

/// Where a request came from and when it arrived (stored beside its trace), and the
/// budget it holds.
struct Origin {
    key: Option<String>,
    arrived: std::time::Instant,
    reservation: Option<Reservation>,
}

impl Origin {
    /// Store `ext` as the trace of request `id` (a failure is logged: the client still
    /// gets its answer), and count its steps' cost as the key's spend.
    async fn store(&mut self, state: &AppState, id: &str, model: &str, ext: &Value) {
        let usage = traces::usage(ext);
        if let Some(r) = self.reservation.take() {
            r.settle(usage.iter().map(|u| u.cost_usd).sum());
        }
        if let Some(key) = &self.key {
            state.metrics.key_usage(key, &usage);
        }
        let meta = TraceMeta {
            key: self.key.clone(),
            latency_ms: Some(self.arrived.elapsed().as_secs_f64() * 1000.0),
        };
        if let Err(e) = state.traces.put(id, model, ext, meta).await {
            tracing::warn!(error = %e, "trace not stored");
        }
    }
}

/// The result of one request, whatever its target.
struct Outcome {
    answer: Answer,
    content: String,
    logprobs: Option<Vec<f32>>,
    finish: &'static str,
}

/// Over HTTP a model name is `r2reasoner`, `r2reasoner/<name>` for a policy the config
/// exposes or a baseline that needs no file, or a pool model id. No part of it is ever
/// used as a path.
fn resolve(state: &AppState, model: &str) -> Result<Target, ApiError> {
    if model == "r2reasoner" {
        return Ok(Target::Routed(state.default_policy.clone()));
    }
    let found = match model.strip_prefix("r2reasoner/") {
        Some(name) => state.client_policy(name).map(Target::Routed),
        None => state.pool.config.index_of(model).map(Target::PassThrough),
    };
    found.ok_or_else(|| {
        let ids = state.pool.config.ids();
        let exposed: Vec<String> = state
            .exposed
            .keys()
            .map(|n| format!("r2reasoner/{n}"))
            .collect();
        ApiError::not_found(
            "model_not_found",
            format!(
                "the model '{model}' does not exist; use r2reasoner, {}r2reasoner/fixed:<model>, \
                 r2reasoner/direct:<model>, r2reasoner/random, or a pool model ({})",
                exposed.iter().map(|e| format!("{e}, ")).collect::<String>(),
                ids.join(", ")
            ),
        )
    })
}

fn sampling(chat: &Chat) -> Sampling {
    match chat.temperature {
        Some(t) if t > 0.0 => Sampling::Temperature {
            temperature: t,
            seed: chat.seed.unwrap_or(0),
        },
        _ => Sampling::Greedy,
    }
}

/// `max_tokens` of a pass-through call on `model`.
fn pass_through_max_tokens(state: &AppState, chat: &Chat, model: usize) -> u32 {
    let context = state.pool.config.models[model].context_length;
    chat.max_tokens.unwrap_or(512).min(context)
}

/// The executor's options for a routed run of `chat`: the client's max_tokens caps every
/// model call of the run (plan, steps, synthesis); a plan cut short is parsed as far as it
/// goes.
fn routed_options(state: &AppState, chat: &Chat) -> ExecOptions {
    let cap = |n: u32| chat.max_tokens.map_or(n, |m| n.min(m));
    ExecOptions {
        sampling: sampling(chat),
        progress: None,
        decompose_max_tokens: cap(state.exec.decompose_max_tokens),
        step_max_tokens: cap(state.exec.step_max_tokens),
        answer_max_tokens: cap(state.exec.answer_max_tokens),
        ..state.exec.clone()
    }
}

/// The most `chat` may cost (the budget reservation; see `budget`).
fn worst_cost(state: &AppState, chat: &Chat, target: &Target, body_bytes: usize) -> f64 {
    match target {
        Target::PassThrough(model) => {
            let bytes = chat.messages.iter().map(|m| m.content.len()).sum();
            let max_tokens = pass_through_max_tokens(state, chat, *model);
            budget::pass_through_worst(&state.pool, *model, bytes, chat.messages.len(), max_tokens)
        }
        Target::Routed(policy) => budget::routed_worst(
            &state.pool,
            &routed_options(state, chat),
            policy.escalation(),
            body_bytes,
        ),
    }
}

async fn run(
    state: &AppState,
    chat: &Chat,
    target: &Target,
    progress: Option<mpsc::UnboundedSender<StepTrace>>,
) -> Result<Outcome, ApiError> {
    let pool = &state.pool;
    match target {
        Target::PassThrough(model) => {
            let request = GenRequest {
                messages: chat.messages.clone(),
                max_tokens: pass_through_max_tokens(state, chat, *model),
                sampling: sampling(chat),
                stop: chat.stop.clone(),
                ignore_eos: false,
            };
            let call = pool
                .call(*model, &request, state.exec.step_timeout)
                .await
                .map_err(|e| ApiError::from_backend(&e))?;
            let step = StepTrace::from_call("1", "pass-through", vec![], pool.id(*model), &call);
            if let Some(tx) = &progress {
                let _ = tx.send(step.clone());
            }
            let finish = match call.response.finish {
                r2_pool::FinishReason::Length => "length",
                _ => "stop",
            };
            Ok(Outcome {
                answer: Answer {
                    answer: call.response.text.clone(),
                    total_cost_usd: call.cost_usd,
                    steps: vec![step],
                    warnings: vec![],
                },
                content: call.response.text,
                logprobs: call.response.token_logprobs,
                finish,
            })
        }
        Target::Routed(policy) => {
            let question = wire::question_with_context(&chat.messages);
            let last_user = chat
                .messages
                .iter()
                .rev()
                .find(|m| m.role == Role::User)
                .map(|m| m.content.as_str())
                .unwrap_or("");
            let family = TaskFamily::guess(last_user);
            let options = ExecOptions {
                progress,
                ..routed_options(state, chat)
            };
            let decomposer = pool.config.index_of(&pool.config.decomposer).unwrap_or(0);
            let answer = Executor::new(pool, options)
                .run(&question, family, policy.as_ref(), decomposer)
                .await
                .map_err(|e| ApiError::from_exec(&e))?;
            Ok(Outcome {
                content: answer.answer.clone(),
                answer,
                logprobs: None,
                finish: "stop",
            })
        }
    }
}

/// A request (and trace) id: 128 random bits, so ids stay unique across restarts and
/// instances and cannot be guessed from one another.
fn next_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness: fall back to time and a process-wide counter.
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes = (nanos ^ (N.fetch_add(1, Ordering::Relaxed) as u128) << 96).to_le_bytes();
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("chatcmpl-{hex}")
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn policy_name(target: &Target) -> String {
    match target {
        Target::PassThrough(_) => "pass-through".into(),
        Target::Routed(p) => p.name(),
    }
}

pub async fn completions(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let mut origin = Origin {
        key: request
            .extensions()
            .get::<KeyName>()
            .map(|k| k.name.clone()),
        arrived: std::time::Instant::now(),
        reservation: None,
    };
    let json = request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(ApiError::unsupported_media_type());
    }
    let limit = state.max_body_bytes;
    let body = axum::body::to_bytes(request.into_body(), limit)
        .await
        .map_err(|_| ApiError::too_large(limit))?;
    let chat = wire::parse(&body)?;
    let target = resolve(&state, &chat.model)?;
    if let Some(key) = &origin.key {
        let worst = worst_cost(&state, &chat, &target, body.len());
        origin.reservation = state
            .budgets
            .admit(key, worst)
            .map_err(|r| ApiError::budget(key, &r, budget::unix_now()))?;
    }
    let permit = state
        .slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::overloaded())?;
    let id = next_id();
    let span =
        tracing::info_span!("chat", request_id = %id, model = %chat.model, stream = chat.stream);
    if chat.stream {
        return Ok(stream(state, chat, target, id, permit, origin)
            .instrument(span)
            .await);
    }
    async move {
        let _permit = permit;
        let timeout = state.request_timeout;
        // The steps that finished, for the partial trace of a failed request.
        let (ptx, prx) = mpsc::unbounded_channel();
        let mut flight = InFlight {
            state: state.clone(),
            origin: Some(origin),
            id: id.clone(),
            model: chat.model.clone(),
            policy: policy_name(&target),
            steps: prx,
        };
        let result = tokio::time::timeout(timeout, run(&state, &chat, &target, Some(ptx)))
            .await
            .map_err(|_| ApiError::timeout(timeout.as_secs_f64()))
            .and_then(|r| r);
        let Some(mut origin) = flight.origin.take() else {
            return Err(ApiError::internal("the request lost its origin"));
        };
        let outcome = match result {
            Ok(o) => o,
            Err(e) => {
                let mut done = Vec::new();
                while let Ok(step) = flight.steps.try_recv() {
                    done.push(step);
                }
                let ext = unfinished(&id, &target, done, &e);
                origin.store(&state, &id, &chat.model, &ext).await;
                let mut resp = e.into_response();
                set_headers(resp.headers_mut(), &id, None);
                return Ok(resp);
            }
        };
        let policy = policy_name(&target);
        let ext = wire::extension(&id, &policy, &outcome.answer);
        state.metrics.steps(&outcome.answer.steps);
        origin.store(&state, &id, &chat.model, &ext).await;
        let lp = if chat.logprobs {
            wire::logprobs_value(outcome.logprobs.as_deref())
        } else {
            Value::Null
        };
        let body = wire::completion(
            &id,
            unix_now(),
            &chat.model,
            &outcome.content,
            outcome.finish,
            lp,
            ext,
            &outcome.answer,
        );
        let mut resp = Json(body).into_response();
        set_headers(resp.headers_mut(), &id, Some(&outcome.answer));
        Ok(resp)
    }
    .instrument(span)
    .await
}

/// A non-streamed request while its run is awaited. If the handler is dropped before it
/// takes `origin` back (the client went away, which cancels the run), the steps finished so
/// far are stored as a `cancelled` trace and their cost settles the key's reservation.
struct InFlight {
    state: Arc<AppState>,
    origin: Option<Origin>,
    id: String,
    model: String,
    policy: String,
    steps: mpsc::UnboundedReceiver<StepTrace>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let Some(mut origin) = self.origin.take() else {
            return;
        };
        let mut done = Vec::new();
        while let Ok(step) = self.steps.try_recv() {
            done.push(step);
        }
        tracing::info!(request_id = %self.id, "client disconnected; work cancelled");
        self.state.metrics.error("client_disconnected");
        let mut ext = unfinished_trace(
            &self.id,
            &self.policy,
            done,
            "the client disconnected; the run was cancelled".into(),
        );
        ext["status"] = json!("cancelled");
        let (state, id, model) = (self.state.clone(), self.id.clone(), self.model.clone());
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move { origin.store(&state, &id, &model, &ext).await });
            }
            // No runtime to store on: still count what the finished steps cost.
            Err(_) => {
                if let Some(r) = origin.reservation.take() {
                    r.settle(traces::usage(&ext).iter().map(|u| u.cost_usd).sum());
                }
            }
        }
    }
}

/// The trace of a run that did not finish: the steps done so far and why it stopped.
fn unfinished_trace(id: &str, policy: &str, done: Vec<StepTrace>, reason: String) -> Value {
    let answer = Answer {
        answer: String::new(),
        total_cost_usd: done.iter().map(|s| s.cost_usd).sum(),
        steps: done,
        warnings: vec![reason],
    };
    wire::extension(id, policy, &answer)
}

/// The trace of a run that failed with `e`: `"status": "error"` and the error the client got.
fn unfinished(id: &str, target: &Target, done: Vec<StepTrace>, e: &ApiError) -> Value {
    let mut ext = unfinished_trace(id, &policy_name(target), done, e.message.clone());
    ext["status"] = json!("error");
    ext["error"] = e.body()["error"].clone();
    ext
}

fn set_headers(h: &mut HeaderMap, id: &str, answer: Option<&Answer>) {
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(HeaderName::from_static(name), v);
        }
    };
    put("x-r2reasoner-trace-id", id.to_string());
    if let Some(a) = answer {
        put("x-r2reasoner-cost-usd", format!("{:.10}", a.total_cost_usd));
        put("x-r2reasoner-steps", a.steps.len().to_string());
    }
}

fn event(v: &Value) -> Event {
    Event::default().data(v.to_string())
}

async fn stream(
    state: Arc<AppState>,
    chat: Chat,
    target: Target,
    id: String,
    permit: tokio::sync::OwnedSemaphorePermit,
    mut origin: Origin,
) -> Response {
    let (tx, rx) = mpsc::channel::<Event>(64);
    let created = unix_now();
    let task_id = id.clone();
    let span = tracing::Span::current();
    tokio::spawn(
        async move {
            let _permit = permit;
            let id = task_id;
            let model = chat.model.clone();
            let first = wire::chunk(&id, created, &model, json!({"role": "assistant", "content": ""}), None);
            if tx.send(event(&first)).await.is_err() {
                return;
            }
            let (ptx, mut prx) = mpsc::unbounded_channel();
            // Boxed so that dropping it (below) cancels the model calls at once.
            let mut work = Box::pin(run(&state, &chat, &target, Some(ptx)));
            let deadline = tokio::time::sleep(state.request_timeout);
            tokio::pin!(deadline);
            // The steps finished so far: stored as a partial trace if the run does not end.
            let mut done: Vec<StepTrace> = Vec::new();
            let result = loop {
                tokio::select! {
                    biased;
                    // The client went away: leaving the loop drops `work`, which cancels the
                    // model calls.
                    _ = tx.closed() => break None,
                    Some(step) = prx.recv() => {
                        let _ = tx.send(event(&wire::progress_chunk(&id, created, &model, &step))).await;
                        done.push(step);
                    }
                    r = &mut work => break Some(r),
                    _ = &mut deadline => break Some(Err(ApiError::timeout(state.request_timeout.as_secs_f64()))),
                }
            };
            drop(work);
            // Progress sent in the same poll as the result.
            while let Ok(step) = prx.try_recv() {
                let _ = tx.send(event(&wire::progress_chunk(&id, created, &model, &step))).await;
                done.push(step);
            }
            let outcome = match result {
                Some(Ok(o)) => o,
                None => {
                    tracing::info!("client disconnected; work cancelled");
                    state.metrics.error("client_disconnected");
                    let mut ext = unfinished_trace(&id, &policy_name(&target), done, "the client disconnected; the run was cancelled".into());
                    ext["status"] = json!("cancelled");
                    origin.store(&state, &id, &model, &ext).await;
                    return;
                }
                Some(Err(e)) => {
                    state.metrics.error(e.code);
                    let ext = unfinished(&id, &target, done, &e);
                    origin.store(&state, &id, &model, &ext).await;
                    let _ = tx.send(event(&e.body())).await;
                    let _ = tx.send(Event::default().data("[DONE]")).await;
                    return;
                }
            };
            let ext = wire::extension(&id, &policy_name(&target), &outcome.answer);
            state.metrics.steps(&outcome.answer.steps);
            origin.store(&state, &id, &model, &ext).await;
            let mut answer = wire::chunk(&id, created, &model, json!({"content": outcome.content}), None);
            if chat.logprobs {
                answer["choices"][0]["logprobs"] = wire::logprobs_value(outcome.logprobs.as_deref());
            }
            let mut last = wire::chunk(&id, created, &model, json!({}), Some(outcome.finish));
            last[wire::EXTENSION] = ext;
            let mut events = vec![event(&answer), event(&last)];
            if chat.include_usage {
                events.push(event(&json!({
                    "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [], "usage": wire::usage(&outcome.answer),
                })));
            }
            events.push(Event::default().data("[DONE]"));
            for e in events {
                if tx.send(e).await.is_err() {
                    return;
                }
            }
        }
        .instrument(span),
    );
    let events = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    let mut resp = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(1)))
        .into_response();
    set_headers(resp.headers_mut(), &id, None);
    resp
}
