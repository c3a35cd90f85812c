"""Drives the official `anthropic` Python SDK against an Anthropic Messages API endpoint
(the mock upstream or a Fulcrum data plane).

Usage: anthropic_client.py BASE_URL API_KEY MODE [MODEL]

BASE_URL is the root the SDK adds `/v1/messages` to (`http://HOST:PORT`, like
`https://api.anthropic.com`). MODE is one of:
  plain   client.messages.create(...)
  stream  client.messages.create(..., stream=True), every server event
  tools   declare get_weather(location), get the tool_use, send the tool_result back
  image   a question about a 1x1 PNG sent as a base64 image block
  error   the same call as plain, for a caller that arranged a failure
  count   client.messages.count_tokens(...)
  models  client.models.list()

Prints one JSON document on stdout. An exception raised by the SDK is caught and
printed as {"error": {"class": ..., "status": ..., ...}} with exit code 0, so the
caller can assert on it; anything else (bad arguments, an import error) exits
non-zero with a traceback on stderr.
"""

import json
import os
import sys

# Only what the script is given: no key, token or base URL from the shell.
for _name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL"):
    os.environ.pop(_name, None)

import anthropic  # noqa: E402

PNG_1X1 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
MAX_TOKENS = 256
HELLO = [{"role": "user", "content": "Say hello."}]
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "The current weather at a place.",
    "input_schema": {
        "type": "object",
        "properties": {"location": {"type": "string"}},
        "required": ["location"],
    },
}


def text_of(message):
    texts = [block.text for block in message.content if block.type == "text"]
    return "".join(texts) if texts else None


def plain(client, model):
    message = client.messages.create(model=model, max_tokens=MAX_TOKENS, messages=HELLO)
    return {
        "id": message.id,
        "type": message.type,
        "role": message.role,
        "model": message.model,
        "content_types": [block.type for block in message.content],
        "text": text_of(message),
        "stop_reason": message.stop_reason,
        "usage": {
            "input_tokens": message.usage.input_tokens,
            "output_tokens": message.usage.output_tokens,
        },
    }


def stream(client, model):
    event_types = []
    text = ""
    text_deltas = 0
    stop_reason = None
    input_tokens = None
    output_tokens = None
    message_ids = set()
    with client.messages.create(
        model=model, max_tokens=MAX_TOKENS, messages=HELLO, stream=True
    ) as events:
        for event in events:
            event_types.append(event.type)
            if event.type == "message_start":
                message_ids.add(event.message.id)
                input_tokens = event.message.usage.input_tokens
            elif event.type == "content_block_delta" and event.delta.type == "text_delta":
                text_deltas += 1
                text += event.delta.text
            elif event.type == "message_delta":
                stop_reason = event.delta.stop_reason
                output_tokens = event.usage.output_tokens
    return {
        "event_types": event_types,
        "text": text,
        "text_deltas": text_deltas,
        "stop_reason": stop_reason,
        "message_ids": sorted(message_ids),
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }


def tools(client, model):
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.messages.create(
        model=model, max_tokens=MAX_TOKENS, messages=messages, tools=[WEATHER_TOOL]
    )
    calls = [block for block in first.content if block.type == "tool_use"]
    messages.append({"role": "assistant", "content": first.content})
    messages.append(
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": call.id, "content": "sunny, 21 C"}
                for call in calls
            ],
        }
    )
    second = client.messages.create(
        model=model, max_tokens=MAX_TOKENS, messages=messages, tools=[WEATHER_TOOL]
    )
    return {
        "calls": [{"id": c.id, "name": c.name, "input": c.input} for c in calls],
        "first_stop_reason": first.stop_reason,
        "text": text_of(second),
        "stop_reason": second.stop_reason,
    }


def image(client, model):
    message = client.messages.create(
        model=model,
        max_tokens=MAX_TOKENS,
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG_1X1},
                    },
                    {"type": "text", "text": "What is in this image?"},
                ],
            }
        ],
    )
    return {"text": text_of(message), "stop_reason": message.stop_reason}


def error(client, model):
    # The caller arranged for this call to fail; an answer is printed as plain's.
    return plain(client, model)


def count(client, model):
    counted = client.messages.count_tokens(
        model=model, messages=[{"role": "user", "content": "How many tokens are these five?"}]
    )
    return {"input_tokens": counted.input_tokens}


def models(client, _model):
    listed = list(client.models.list())
    return {"ids": [m.id for m in listed], "types": sorted({m.type for m in listed})}


MODES = {
    "plain": plain,
    "stream": stream,
    "tools": tools,
    "image": image,
    "error": error,
    "count": count,
    "models": models,
}


def main():
    if len(sys.argv) not in (4, 5) or sys.argv[3] not in MODES:
        sys.exit(__doc__)
    base_url, api_key, mode = sys.argv[1:4]
    model = sys.argv[4] if len(sys.argv) == 5 else "claude-sonnet-4-6"
    # No retries: a failure must surface as one request and one exception.
    client = anthropic.Anthropic(base_url=base_url, api_key=api_key, max_retries=0, timeout=30.0)
    try:
        result = MODES[mode](client, model)
    except anthropic.APIStatusError as e:
        body = e.body if isinstance(e.body, dict) else {}
        result = {
            "error": {
                "class": type(e).__name__,
                "status": e.status_code,
                "message": e.message,
                "type": (body.get("error") or {}).get("type"),
            }
        }
    except anthropic.APIError as e:
        result = {"error": {"class": type(e).__name__, "status": None, "message": e.message}}
    result["sdk_version"] = anthropic.__version__
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
