"""Drives the official `openai` Python SDK against a Fulcrum data plane.

Usage: openai_client.py BASE_URL API_KEY MODE [MODEL]

MODE is one of:
  chat    client.chat.completions.create(...)
  stream  the same with stream=True (and stream_options.include_usage)
  models  client.models.list()

Prints one JSON document on stdout. An exception raised by the SDK is caught and
printed as {"error": {"class": ..., "status": ..., ...}} with exit code 0, so the
caller can assert on it; anything else (bad arguments, an import error) exits
non-zero with a traceback on stderr.
"""

import json
import sys

import openai


def chat(client, model):
    completion = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Say hello."}],
    )
    choice = completion.choices[0]
    return {
        "id": completion.id,
        "object": completion.object,
        "model": completion.model,
        "content": choice.message.content,
        "role": choice.message.role,
        "finish_reason": choice.finish_reason,
        "usage": completion.usage.model_dump() if completion.usage else None,
    }


def stream(client, model):
    chunks = 0
    content_chunks = 0
    text = ""
    ids = set()
    finish_reason = None
    usage = None
    role = None
    with client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Say hello."}],
        stream=True,
        stream_options={"include_usage": True},
    ) as events:
        for chunk in events:
            chunks += 1
            ids.add(chunk.id)
            if chunk.usage is not None:
                usage = chunk.usage.model_dump()
            for choice in chunk.choices:
                if choice.delta.role:
                    role = choice.delta.role
                if choice.delta.content:
                    content_chunks += 1
                    text += choice.delta.content
                if choice.finish_reason:
                    finish_reason = choice.finish_reason
    return {
        "chunks": chunks,
        "content_chunks": content_chunks,
        "content": text,
        "role": role,
        "ids": sorted(ids),
        "finish_reason": finish_reason,
        "usage": usage,
    }


def models(client, _model):
    listed = client.models.list()
    return {"ids": [m.id for m in listed], "owned_by": sorted({m.owned_by for m in listed})}


MODES = {"chat": chat, "stream": stream, "models": models}


def main():
    if len(sys.argv) not in (4, 5) or sys.argv[3] not in MODES:
        sys.exit(__doc__)
    base_url, api_key, mode = sys.argv[1:4]
    model = sys.argv[4] if len(sys.argv) == 5 else "gpt-4o-mini"
    # No retries: a 401 must surface as one request and one exception.
    client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=30.0)
    try:
        result = MODES[mode](client, model)
    except openai.APIError as e:
        result = {
            "error": {
                "class": type(e).__name__,
                "status": getattr(e, "status_code", None),
                "message": e.message,
                "code": getattr(e, "code", None),
                "type": getattr(e, "type", None),
            }
        }
    result["sdk_version"] = openai.__version__
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
