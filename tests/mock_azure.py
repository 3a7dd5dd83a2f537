"""Azure OpenAI's side of the mock upstream (tests/mock_upstream.py).

Azure serves OpenAI's wire formats at its own URLs, which the mock answers
with its OpenAI builders:

    POST /openai/deployments/<deployment>/chat/completions?api-version=...
    POST /openai/responses?api-version=...        (the deployment is the body's model)
    GET  /openai/responses/<id>?api-version=...
    GET  /openai/models[/<id>]?api-version=...
    POST /openai/v1/chat/completions, /openai/v1/responses, GET /openai/v1/models[/<id>]
                                                   (the v1 API: no dated api-version)

and behaves like Azure where it differs from OpenAI:
- the key comes in `api-key`, an Entra ID token in `Authorization: Bearer`;
  none of them: 401 in Azure's words;
- the deployments shape without `api-version`: 404 "Resource not found"; the
  v1 shape with a dated one: 400;
- a scripted 429 carries `retry-after-ms` and `retry-after` (unless the
  script says otherwise) and Azure's error body;
- a request whose text holds CONTENT_FILTER_TRIGGER is refused by the
  content filter: 400 with code "content_filter".
"""

import json
from urllib.parse import parse_qs

AZURE = "azure"

# Words in a request that the mock's content filter refuses.
CONTENT_FILTER_TRIGGER = "please trip the content filter"

# What a scripted 429 names unless the script says otherwise: retry-after-ms
# is the precise one, and what the module must prefer.
RETRY_AFTER_MS = "6500"
RETRY_AFTER = "7"

V1_PREFIX = "/openai/v1/"
V1_VERSIONS = {"v1", "preview", "latest"}


def routes(mock):
    """Azure's routes for mock_upstream's ROUTES, answered by its OpenAI builders."""
    chat = mock.Route(AZURE, mock.chat_completion, mock.chat_stream, mock.chat_delta)
    responses = mock.Route(AZURE, mock.response_object, mock.responses_stream,
                           mock.responses_delta)
    models = mock.Route(AZURE, mock.model_list)
    model = mock.Route(AZURE, mock.model_retrieve)
    return [
        ({"POST"}, r"/openai/deployments/(?P<deployment>[^/]+)/chat/completions", chat),
        ({"POST"}, r"/openai(?:/v1)?/responses", responses),
        ({"GET"}, r"/openai(?:/v1)?/responses/(?P<id>[^/]+)",
         mock.Route(AZURE, mock.retrieved_response)),
        ({"POST"}, r"/openai/v1/chat/completions", chat),
        ({"GET"}, r"/openai(?:/v1)?/models", models),
        ({"GET"}, r"/openai(?:/v1)?/models/(?P<id>[^/]+)", model),
    ]


def request_key(headers):
    """(key, header that carried it, whether both credential headers were sent)."""
    api_key = headers.get("api-key", "").strip()
    scheme, _, token = headers.get("Authorization", "").partition(" ")
    both = "api-key" in headers and "Authorization" in headers
    if api_key:
        return api_key, "api-key", both
    if scheme.lower() == "bearer" and token.strip():
        return token.strip(), "authorization", both
    return None, None, both


def azure_error(http_status, code, message, **more):
    return {"status": http_status,
            "body": {"error": {"code": code, "message": message, **more}}}


def refusal(path, query, key):
    """Azure's answer to a request it refuses before any deployment sees it, or None."""
    versions = parse_qs(query).get("api-version", [])
    if path.startswith(V1_PREFIX):
        if versions and versions[0] not in V1_VERSIONS:
            return azure_error(400, "BadRequest",
                               "api-version query parameter is not allowed when using /v1 path")
    elif not versions:
        return azure_error(404, "404", "Resource not found")
    if key is None:
        return azure_error(401, "401", "Access denied due to invalid subscription key or wrong "
                           "API endpoint. Make sure to provide a valid key for an active "
                           "subscription and use a correct regional API endpoint for your "
                           "resource.")
    return None


def content_filter():
    return azure_error(400, "content_filter",
                       "The response was filtered due to the prompt triggering Azure OpenAI's "
                       "content management policy.", param="prompt", type=None,
                       status=400, innererror={
                           "code": "ResponsibleAIPolicyViolation",
                           "content_filter_result": {
                               "hate": {"filtered": False, "severity": "safe"},
                               "violence": {"filtered": True, "severity": "medium"}}})


def throttled(spec):
    """A scripted 429 as Azure sends it: its body, retry-after-ms and retry-after."""
    headers = {"retry-after-ms": RETRY_AFTER_MS, "retry-after": RETRY_AFTER,
               **{name.lower(): value for name, value in (spec.get("headers") or {}).items()}}
    body = azure_error(429, "429", "Requests to the ChatCompletions_Create Operation under "
                       "Azure OpenAI API have exceeded call rate limit of your current "
                       f"pricing tier. Please retry after {RETRY_AFTER} seconds.")["body"]
    return {"body": body, **spec, "headers": headers}


def answer(x, query, key, spec):
    """The spec the mock answers an Azure request with: Azure's refusals
    first, then the script (Azure's 429 filled in), then the content filter."""
    refused = refusal(x.path, query, key)
    if refused:
        return refused
    if spec.get("status") == 429:
        return throttled(spec)
    if spec:
        return spec
    if CONTENT_FILTER_TRIGGER in json.dumps(x.request):
        return content_filter()
    return spec
