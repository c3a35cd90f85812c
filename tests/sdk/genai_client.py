"""Drives the official `google-genai` Python SDK against a Gemini API endpoint (the mock
upstream or a Fulcrum data plane).

Usage: genai_client.py BASE_URL API_KEY MODE [MODEL]

BASE_URL is the root the SDK adds `/v1beta/models/...` to (`http://HOST:PORT`, like
`https://generativelanguage.googleapis.com`). MODE is one of:
  plain   client.models.generate_content(...)
  stream  client.models.generate_content_stream(...)
  tools   declare get_weather(location), get the call, send the result back with its id
  image   a question about a 1x1 PNG sent inline
  error   the same call as plain, for a caller that arranged a failure
  count   client.models.count_tokens(...)
  models  client.models.list()

Prints one JSON document on stdout. An exception raised by the SDK is caught and
printed as {"error": {"class": ..., "status": ..., ...}} with exit code 0, so the
caller can assert on it; anything else (bad arguments, an import error) exits
non-zero with a traceback on stderr.
"""

import base64
import json
import os
import sys

# Only what the script is given: no key, base URL or Vertex switch from the shell.
for _name in (
    "GOOGLE_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_GEMINI_BASE_URL",
    "GOOGLE_VERTEX_BASE_URL",
    "GOOGLE_GENAI_USE_VERTEXAI",
    "GOOGLE_CLOUD_PROJECT",
    "GOOGLE_CLOUD_LOCATION",
):
    os.environ.pop(_name, None)

from google import genai  # noqa: E402
from google.genai import errors, types  # noqa: E402
from google.genai.version import __version__ as SDK_VERSION  # noqa: E402

PNG_1X1 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
PROMPT = "Say hello."


def usage_of(response):
    usage = response.usage_metadata
    if usage is None:
        return None
    return {
        "prompt_token_count": usage.prompt_token_count,
        "candidates_token_count": usage.candidates_token_count,
        "thoughts_token_count": usage.thoughts_token_count,
        "total_token_count": usage.total_token_count,
    }


def finish_reason_of(response):
    if not response.candidates or response.candidates[0].finish_reason is None:
        return None
    reason = response.candidates[0].finish_reason
    return getattr(reason, "value", str(reason))


def answer_text(response):
    """The non-thought text of the first candidate (response.text warns on calls)."""
    if not response.candidates or not response.candidates[0].content:
        return None
    parts = response.candidates[0].content.parts or []
    texts = [p.text for p in parts if p.text is not None and not p.thought]
    return "".join(texts) if texts else None


def plain(client, model):
    response = client.models.generate_content(model=model, contents=PROMPT)
    return {
        "text": answer_text(response),
        "role": response.candidates[0].content.role,
        "finish_reason": finish_reason_of(response),
        "model_version": response.model_version,
        "response_id": response.response_id,
        "usage": usage_of(response),
    }


def stream(client, model):
    chunks = 0
    text_chunks = 0
    text = ""
    finish_reason = None
    usage = None
    response_ids = set()
    for chunk in client.models.generate_content_stream(model=model, contents=PROMPT):
        chunks += 1
        if chunk.response_id:
            response_ids.add(chunk.response_id)
        piece = answer_text(chunk)
        if piece:
            text_chunks += 1
            text += piece
        if finish_reason_of(chunk):
            finish_reason = finish_reason_of(chunk)
        if chunk.usage_metadata is not None:
            usage = usage_of(chunk)
    return {
        "chunks": chunks,
        "text_chunks": text_chunks,
        "text": text,
        "finish_reason": finish_reason,
        "response_ids": sorted(response_ids),
        "usage": usage,
    }


WEATHER_TOOL = types.Tool(
    function_declarations=[
        types.FunctionDeclaration(
            name="get_weather",
            description="The current weather at a place.",
            parameters=types.Schema(
                type="OBJECT",
                properties={"location": types.Schema(type="STRING")},
                required=["location"],
            ),
        )
    ]
)


def tools(client, model):
    config = types.GenerateContentConfig(
        tools=[WEATHER_TOOL],
        # The script plays the tool itself, as an application would.
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )
    contents = [
        types.Content(role="user", parts=[types.Part.from_text(text="What is the weather in Paris?")])
    ]
    first = client.models.generate_content(model=model, contents=contents, config=config)
    calls = first.function_calls or []
    contents.append(first.candidates[0].content)
    contents.append(
        types.Content(
            role="user",
            parts=[
                types.Part(
                    function_response=types.FunctionResponse(
                        id=call.id, name=call.name, response={"forecast": "sunny", "celsius": 21}
                    )
                )
                for call in calls
            ],
        )
    )
    second = client.models.generate_content(model=model, contents=contents, config=config)
    return {
        "calls": [{"id": c.id, "name": c.name, "args": c.args} for c in calls],
        "first_finish_reason": finish_reason_of(first),
        "text": answer_text(second),
        "finish_reason": finish_reason_of(second),
        "usage": usage_of(second),
    }


def image(client, model):
    response = client.models.generate_content(
        model=model,
        contents=[
            types.Part.from_bytes(data=base64.b64decode(PNG_1X1), mime_type="image/png"),
            "What is in this image?",
        ],
    )
    return {"text": answer_text(response), "finish_reason": finish_reason_of(response)}


def error(client, model):
    # The caller arranged for this call to fail; an answer is printed as plain's.
    return plain(client, model)


def count(client, model):
    response = client.models.count_tokens(model=model, contents="How many tokens are these five?")
    return {"total_tokens": response.total_tokens}


def models(client, _model):
    listed = list(client.models.list())
    return {
        "names": [m.name for m in listed],
        "display_names": [m.display_name for m in listed],
        "supported_actions": sorted({a for m in listed for a in (m.supported_actions or [])}),
    }


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
    model = sys.argv[4] if len(sys.argv) == 5 else "gemini-2.5-flash"
    client = genai.Client(
        api_key=api_key,
        http_options=types.HttpOptions(
            base_url=base_url,
            api_version="v1beta",
            timeout=30_000,
            # No retries: a failure must surface as one request and one exception.
            retry_options=types.HttpRetryOptions(attempts=1),
        ),
    )
    try:
        result = MODES[mode](client, model)
    except errors.APIError as e:
        result = {
            "error": {
                "class": type(e).__name__,
                "status": e.code,
                "status_name": e.status,
                "message": e.message,
            }
        }
    result["sdk_version"] = SDK_VERSION
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
