"""Drives the official `openai` Python SDK against a Fulcrum data plane.

Usage: openai_client.py BASE_URL API_KEY MODE [MODEL]

MODE is one of:
  chat    client.chat.completions.create(...)
  stream  the same with stream=True (and stream_options.include_usage)
  models  client.models.list()
  tools   declare get_weather(location), get the tool call, send the tool result back
  image   a question about a 1x1 PNG sent as a data: URL

Prints one JSON document on stdout. An exception raised by the SDK is caught and
printed as {"error": {"class": ..., "status": ..., ...}} with exit code 0, so the
caller can assert on it; anything else (bad arguments, an import error) exits
non-zero with a traceback on stderr.
"""

import json
import sys

import openai

PNG_1X1 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather at a place.",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
        },
    },
}


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


def tools(client, model):
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL])
    message = first.choices[0].message
    calls = message.tool_calls or []
    messages.append(
        {
            "role": "assistant",
            "content": message.content,
            "tool_calls": [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.function.name, "arguments": c.function.arguments},
                }
                for c in calls
            ],
        }
    )
    for call in calls:
        messages.append({"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"})
    second = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL])
    return {
        "calls": [
            {"id": c.id, "name": c.function.name, "arguments": json.loads(c.function.arguments)}
            for c in calls
        ],
        "first_finish_reason": first.choices[0].finish_reason,
        "content": second.choices[0].message.content,
        "finish_reason": second.choices[0].finish_reason,
    }


def image(client, model):
    completion = client.chat.completions.create(
        model=model,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this image?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64," + PNG_1X1}},
                ],
            }
        ],
    )
    choice = completion.choices[0]
    return {"content": choice.message.content, "finish_reason": choice.finish_reason}


MODES = {"chat": chat, "stream": stream, "models": models, "tools": tools, "image": image}


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
