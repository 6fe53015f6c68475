"""Calls a running `r2reasoner serve` with the official OpenAI Python client.

Run by crates/cli/tests/serve.rs with R2_BASE_URL and R2_API_KEY set; exits non-zero
(with the failed assertion) on any mismatch.
"""
import json
import os
import urllib.error
import urllib.request

import openai

BASE = os.environ["R2_BASE_URL"]
KEY = os.environ["R2_API_KEY"]
MODEL = "smollm2-135m"
client = openai.OpenAI(base_url=BASE + "/v1", api_key=KEY, max_retries=0, timeout=600)
USER = [{"role": "user", "content": "What is 2 + 3?"}]


def check(name, cond, detail=""):
    if not cond:
        raise AssertionError(f"{name}: {detail}")
    print(f"ok - {name}")


# Model list
ids = [m.id for m in client.models.list()]
check("models list", "r2reasoner" in ids and MODEL in ids and f"r2reasoner/fixed:{MODEL}" in ids, ids)

# Non-streaming pass-through
r = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=24)
check("pass-through content", bool(r.choices[0].message.content), r)
check("pass-through usage", r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0, r.usage)
check("pass-through model", r.model == MODEL, r.model)

# Routed (the config's default policy), with headers and the extension field
# (max_tokens caps every model call of the routed run, which keeps this test's time bounded)
raw = client.chat.completions.with_raw_response.create(model="r2reasoner", messages=USER, max_tokens=96)
comp = raw.parse()
ext = comp.model_extra["r2reasoner"]
check("routed answer", comp.choices[0].message.content == ext["answer"], ext)
check("routed steps header", int(raw.headers["x-r2reasoner-steps"]) == len(ext["steps"]) > 0, raw.headers)
check("routed cost header", abs(float(raw.headers["x-r2reasoner-cost-usd"]) - ext["total_cost_usd"]) < 1e-9)
check("routed usage", comp.usage.total_tokens == sum(s["input_tokens"] + s["output_tokens"] for s in ext["steps"]))
req = urllib.request.Request(f"{BASE}/v1/traces/{ext['trace_id']}", headers={"Authorization": f"Bearer {KEY}"})
with urllib.request.urlopen(req) as resp:
    check("stored trace", json.load(resp)["steps"] == ext["steps"])

# Multi-turn, policy in the model name
r = client.chat.completions.create(
    model=f"r2reasoner/direct:{MODEL}",
    messages=[{"role": "user", "content": "I have 2 apples."},
              {"role": "assistant", "content": "OK, 2 apples."},
              {"role": "user", "content": "I buy 3 more. How many apples now?"}])
check("multi-turn", bool(r.choices[0].message.content) and r.model_extra["r2reasoner"]["policy"] == f"direct:{MODEL}")

# Streaming: progress chunks, then the answer, then [DONE] (the client stops there)
chunks = list(client.chat.completions.create(
    model=f"r2reasoner/direct:{MODEL}", messages=USER, stream=True, stream_options={"include_usage": True}))
progress = [c for c in chunks if (c.model_extra or {}).get("r2reasoner", {}).get("step")]
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
check("stream progress", len(progress) >= 1, chunks)
check("stream answer", bool(text), chunks)
check("stream finish", any(c.choices and c.choices[0].finish_reason == "stop" for c in chunks))
check("stream usage", chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0, chunks[-1])

# Pass-through streaming
text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
    model=MODEL, messages=USER, max_tokens=16, stream=True) if c.choices)
check("pass-through stream", bool(text))

# Errors, as the client sees them
try:
    client.chat.completions.create(model="gpt-9", messages=USER)
    check("unknown model", False, "no error")
except openai.NotFoundError as e:
    check("unknown model", e.status_code == 404 and e.code == "model_not_found", e)
try:
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "  "}])
    check("empty content", False, "no error")
except openai.BadRequestError as e:
    check("empty content", e.status_code == 400 and e.code == "empty_content", e)
try:
    client.chat.completions.create(model=MODEL, messages=[])
    check("missing messages", False, "no error")
except openai.BadRequestError as e:
    check("missing messages", e.status_code == 400 and e.code == "missing_messages", e)
try:
    openai.OpenAI(base_url=BASE + "/v1", api_key="wrong-key", max_retries=0).models.list()
    check("bad key", False, "no error")
except openai.AuthenticationError as e:
    check("bad key", e.status_code == 401 and e.code == "invalid_api_key", e)


def post_raw(body: bytes):
    req = urllib.request.Request(f"{BASE}/v1/chat/completions", data=body, method="POST",
                                 headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


status, body = post_raw(b"{not json")
check("bad JSON", status == 400 and body["error"]["code"] == "invalid_json", body)
status, body = post_raw(json.dumps({"model": MODEL, "messages": [{"role": "user", "content": 5}]}).encode())
check("wrong type", status == 400 and body["error"]["type"] == "invalid_request_error", body)
status, body = post_raw(json.dumps({"model": MODEL, "messages": USER, "pad": "x" * 9000}).encode())
check("oversized body", status == 413 and body["error"]["code"] == "body_too_large", body)
with urllib.request.urlopen(f"{BASE}/health") as resp:
    check("health without a key", resp.status == 200)
print("all checks passed")
