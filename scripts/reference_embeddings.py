#!/usr/bin/env python3
"""Reference vectors for the local embedding model, from sentence-transformers on PyTorch.

The embeddings service runs all-MiniLM-L6-v2 with candle; its fixture test checks that every
vector it computes matches the vectors written here (cosine >= 0.999). This script is the only
place those vectors come from, so regenerating the fixture is:

    $HOME/.cache/millrace/pyref/bin/python scripts/reference_embeddings.py

It needs torch and sentence-transformers (the venv above); `make test` does not, it only reads
the committed fixture. The model is read from the same folder the service uses
(MILLRACE_EMBEDDING_MODEL_DIR, else $MILLRACE_HOME/models/all-MiniLM-L6-v2), so both sides embed
with the very same weights and tokenizer.
"""

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "services/embeddings/tests/fixtures/minilm_reference.json"

# Far beyond 256 word pieces, so the fixture checks truncation at max_seq_length.
_LONG_PARAGRAPH = (
    "Redis Streams deliver every entry at least once, so each stage of the pipeline must be "
    "idempotent: a handler may run twice for the same batch after a crash, and the second run "
    "must neither duplicate the stored chunks nor count the batch twice. "
)

SENTENCES = [
    "Hello world",
    "a",
    "What is ownership in Rust?",
    "Ownership is a set of rules that govern how a Rust program manages memory.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The quick brown fox jumps over the lazy dog.",
    "!!! ??? ... --- ;;; (((",
    "C'est la vie : l'économie française a progressé de 0,5 % au troisième trimestre.",
    "Der Lagerbestand wurde am 3. März um 14:00 Uhr überprüft und für ausreichend befunden.",
    "El modelo de lenguaje responde preguntas sobre documentos técnicos en español.",
    "東京は日本の首都であり、世界最大の都市圏の一つです。",
    "Москва — столица России и крупнейший город страны.",
    "def embed(texts): return [model.encode(t) for t in texts]  # TODO: batch these",
    "https://example.com/docs/v1/ingest?tenant=acme&doc=42#section-3",
    "Invoice #2024-0042: 3 × widgets @ $19.99 = $59.97 (tax incl.)",
    "   leading and trailing whitespace   ",
    "UPPERCASE TEXT SHOULD EMBED LIKE LOWERCASE TEXT BECAUSE THE TOKENIZER LOWERCASES",
    "emoji 🚀🔥 and symbols ∑∫√ mixed with words",
    _LONG_PARAGRAPH * 6,
    " ".join(f"token{i}" for i in range(400)),
    "The mitochondria is the powerhouse of the cell; it produces ATP through oxidative "
    "phosphorylation, a process that depends on a proton gradient across the inner membrane.",
]


def default_model_dir() -> Path:
    explicit = os.environ.get("MILLRACE_EMBEDDING_MODEL_DIR")
    if explicit:
        return Path(explicit)
    home = os.environ.get("MILLRACE_HOME") or os.path.join(os.environ["HOME"], ".cache/millrace")
    return Path(home) / "models" / "all-MiniLM-L6-v2"


def to_json(fixture: dict) -> str:
    """Pretty JSON with one line per sentence and per vector, so diffs of the fixture stay readable."""
    lines = ["{"]
    items = list(fixture.items())
    for i, (key, value) in enumerate(items):
        comma = "," if i + 1 < len(items) else ""
        if isinstance(value, list):
            inner = [json.dumps(v, ensure_ascii=False) for v in value]
            body = ",\n    ".join(inner)
            lines.append(f'  "{key}": [\n    {body}\n  ]{comma}')
        else:
            lines.append(f'  "{key}": {json.dumps(value, ensure_ascii=False)}{comma}')
    lines.append("}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=default_model_dir())
    parser.add_argument("--out", type=Path, default=FIXTURE)
    args = parser.parse_args()

    if not (args.model_dir / "model.safetensors").is_file():
        print(f"no model in {args.model_dir}; run `make setup` first", file=sys.stderr)
        return 1

    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(args.model_dir), device="cpu")
    # One sentence per call: the reference must not depend on how sentences were batched.
    vectors = [model.encode([s], normalize_embeddings=True, convert_to_numpy=True)[0] for s in SENTENCES]
    tokens = [len(model.tokenizer(s, truncation=False)["input_ids"]) for s in SENTENCES]

    fixture = {
        "model": args.model_dir.name,
        "max_seq_length": model.max_seq_length,
        "generator": "scripts/reference_embeddings.py (sentence-transformers on PyTorch, CPU)",
        "sentences": SENTENCES,
        "tokens_untruncated": tokens,
        "vectors": [[round(float(x), 7) for x in v] for v in vectors],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(to_json(fixture), encoding="utf-8")
    print(f"wrote {len(SENTENCES)} vectors of {len(vectors[0])} dimensions to {args.out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
