#!/usr/bin/env python3
"""Checks the llm-gateway's OpenAI-compatible API with the official `openai` Python SDK.

The gateway's own tests speak HTTP by hand; this speaks it as the SDK does (its default base64
embeddings, its SSE parser, its error classes), which is what users of the API will run.

    python scripts/openai_sdk_check.py --base-url http://127.0.0.1:8065/v1 --api-key mr_…

Does a chat completion, a streamed completion with usage, and an embedding; prints a JSON
summary on stdout and exits non-zero if any check fails. Needs `pip install openai`
(`make setup` installs it into ${MILLRACE_HOME:-~/.cache/millrace}/venv-openai).
"""

import argparse
import json
import os
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True, help="the gateway's API root, with /v1")
    parser.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY", ""),
                        help="a key with the `llm` scope (default: $OPENAI_API_KEY)")
    parser.add_argument("--chat-model", default="gpt-4o-mini")
    parser.add_argument("--embed-model", default="text-embedding-3-small")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per request")
    args = parser.parse_args()

    try:
        import openai
    except ImportError:
        print(json.dumps({"ok": False, "error": "the openai package is not installed (pip install openai)"}))
        return 2

    # The gateway's API takes `llm`-scoped keys (virtual keys). No retries: a failure should show.
    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key, timeout=args.timeout, max_retries=0)
    summary = {"ok": True, "sdk_version": openai.__version__, "checks": {}}

    def check(name, run):
        started = time.monotonic()
        try:
            result = run()
            summary["checks"][name] = {"ok": True, **result}
        except Exception as err:  # noqa: BLE001 - every failure is reported, none aborts the others
            summary["ok"] = False
            summary["checks"][name] = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        summary["checks"][name]["seconds"] = round(time.monotonic() - started, 3)

    prompt = [{"role": "user", "content": "Say something about water mills and rivers."}]

    def chat():
        answer = client.chat.completions.create(model=args.chat_model, messages=prompt)
        content = answer.choices[0].message.content
        assert content, "empty content"
        assert answer.choices[0].finish_reason == "stop", answer.choices[0].finish_reason
        assert answer.usage and answer.usage.total_tokens > 0, f"no usage: {answer.usage}"
        return {"model": answer.model, "content": content, "total_tokens": answer.usage.total_tokens}

    def stream():
        chunks = client.chat.completions.create(
            model=args.chat_model, messages=prompt, stream=True, stream_options={"include_usage": True}
        )
        pieces, finish_reason, usage, count = [], None, None, 0
        for chunk in chunks:
            count += 1
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                if choice.delta.content:
                    pieces.append(choice.delta.content)
                if choice.finish_reason:
                    finish_reason = choice.finish_reason
        content = "".join(pieces)
        assert content, "the deltas concatenate to nothing"
        assert finish_reason == "stop", finish_reason
        assert usage is not None and usage.total_tokens > 0, "no usage chunk despite include_usage"
        return {"chunks": count, "content": content, "total_tokens": usage.total_tokens}

    def embedding():
        # The SDK asks for base64 and decodes it as little-endian float32.
        answer = client.embeddings.create(model=args.embed_model, input=["water mills", "rivers"])
        vectors = [item.embedding for item in answer.data]
        assert len(vectors) == 2, f"{len(vectors)} vectors for 2 inputs"
        assert all(len(v) > 0 for v in vectors), "an empty vector"
        assert all(isinstance(x, float) for x in vectors[0]), "not floats"
        norm = sum(x * x for x in vectors[0]) ** 0.5
        return {"model": answer.model, "dimensions": len(vectors[0]), "norm": round(norm, 4)}

    def refused():
        # Errors must come back in OpenAI's shape, so the SDK raises its own exception classes.
        try:
            client.chat.completions.create(model=args.chat_model, messages=[])
        except openai.BadRequestError as err:
            return {"status": err.status_code, "message": err.message}
        raise AssertionError("an empty messages list was accepted")

    def unauthenticated():
        # A wrong key is OpenAI's 401, which the SDK raises as AuthenticationError.
        stranger = openai.OpenAI(base_url=args.base_url, api_key="mr_not-a-key", timeout=args.timeout, max_retries=0)
        try:
            stranger.models.list()
        except openai.AuthenticationError as err:
            return {"status": err.status_code, "message": err.message}
        raise AssertionError("an unknown key was accepted")

    check("chat", chat)
    check("stream", stream)
    check("embedding", embedding)
    check("bad_request", refused)
    check("unauthenticated", unauthenticated)

    chat_ok, stream_ok = summary["checks"]["chat"]["ok"], summary["checks"]["stream"]["ok"]
    if chat_ok and stream_ok:
        # Expected only of a deterministic upstream (the fake): reported, never failed.
        same = summary["checks"]["stream"]["content"] == summary["checks"]["chat"]["content"]
        summary["stream_matches_chat"] = same
    print(json.dumps(summary, indent=2))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
