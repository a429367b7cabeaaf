"""``GET /openapi.json``: an OpenAPI 3.1 document of the API, with the served model's own
input and output schemas (descriptions, bounds, choices, file formats)."""

from __future__ import annotations

import copy
from typing import Any

from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tungstenkit import __version__
from tungstenkit._model import ModelDefinition
from tungstenkit._queue import PRIORITIES
from tungstenkit._settings import Settings
from tungstenkit._webhook_protocol import DELIVERY_HEADER, EVENT_HEADER, EVENTS, MAX_URL_LENGTH, SIGNATURE_HEADER
from tungstenkit.app.submit_options import DEADLINE_HEADER, MAX_DEADLINE_S

OPENAPI_VERSION = "3.1.0"
_REF = "#/components/schemas/{model}"

#: What each file kind accepts, for the field descriptions.
_FILE_FORMATS = {
    "image": ("image/*", "an image: PNG, JPEG, GIF, WebP, BMP or TIFF"),
    "audio": ("audio/*", "an audio file (WAV, MP3, FLAC, Ogg, ...)"),
    "video": ("video/*", "a video file (MP4, WebM, ...)"),
    "binary": ("application/octet-stream", "any file"),
}


#: How the API's own schemas are referred to until their names are settled (a model's
#: class may have taken one: then the API's is renamed).
_OWN = "#/tungsten-api/"


#: How /docs groups the endpoints (the rest are "Predictions").
_TAGS = {"/": "Model", "/health": "Model", "/metrics": "Operations", "/openapi.json": "Operations", "/docs": "Operations"}
_TAG_DESCRIPTIONS = [
    {"name": "Predictions", "description": "Create predictions, follow them to their end, cancel them."},
    {"name": "Model", "description": "The served model, its demo page, and whether the server is ready."},
    {"name": "Operations", "description": "Metrics, this description, and its interactive page."},
]


def _ref(name: str) -> dict[str, str]:
    """A reference to one of the model's schemas."""
    return {"$ref": _REF.format(model=name)}


def _own(name: str) -> dict[str, str]:
    """A reference to one of the API's own schemas."""
    return {"$ref": _OWN + name}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _describe_files(node: Any, inputs: bool, output_files: str) -> None:
    """Say, on each file field, what it accepts or returns (in place)."""
    if isinstance(node, list):
        for item in node:
            _describe_files(item, inputs, output_files)
        return
    if not isinstance(node, dict):
        return
    kind = node.get("x-tungsten-file")
    if kind in _FILE_FORMATS:
        media_type, what = _FILE_FORMATS[kind]
        if inputs:
            how = "as a data URI, plain base64, or an http(s) URL on a public address"
        elif output_files == "url":
            how = "as a link to GET /files/{name}"
        else:
            how = "as a data URI"
        node["contentMediaType"] = media_type
        note = f"{what[0].upper()}{what[1:]}, {how}."
        node["description"] = f"{node['description']} ({note})" if node.get("description") else note
    for value in node.values():
        _describe_files(value, inputs, output_files)


def _model_schemas(definition: ModelDefinition, settings: Settings) -> tuple[str, str, dict[str, Any]]:
    """The names of the input and output schemas, and every schema they need."""
    refs, found = models_json_schema(
        [(definition.input_cls, "validation"), (definition.output_cls, "serialization")], ref_template=_REF
    )
    schemas = copy.deepcopy(found.get("$defs", {}))
    input_name = refs[(definition.input_cls, "validation")]["$ref"].rsplit("/", 1)[1]
    output_name = refs[(definition.output_cls, "serialization")]["$ref"].rsplit("/", 1)[1]
    _describe_files(schemas[input_name], True, settings.output_files)
    for name, schema in schemas.items():
        if name != input_name:
            _describe_files(schema, name == "MaskedImage", settings.output_files)
    return input_name, output_name, schemas


EVENTS_DESCRIPTION = (
    "Server-sent events (text/event-stream), each with an id, until `completed`: `queued` "
    "(`{id, status, created_at}`), `start` (`{started_at}`), `output` (a generator model's new partial "
    "outputs: `[{index, output}, ...]`, index being the input's position in the request), `progress` "
    "(`{step, total, message}`), `log` (`{text}`: what the model printed or logged), and `completed` (the "
    "final GET body). A client that reconnects with Last-Event-ID gets exactly the events after it. A "
    "comment line `: keep-alive` comes every 15 s of silence."
)


def _api_schemas(output_name: str, max_inputs: int) -> dict[str, Any]:
    stamp = _nullable({"type": "string", "format": "date-time"})
    prediction = {
        "type": "object",
        "description": "A prediction as GET /predictions/{prediction_id} shows it.",
        "properties": {
            "outputs": {
                **_nullable({"type": "array", "items": _ref(output_name)}),
                "description": "One output per input, in input order, once every input succeeded; else null.",
            },
            "status": {"type": "string", "enum": ["pending", "running", "success", "failed"]},
            "error_message": {
                **_nullable({"type": "string"}),
                "description": 'Why it failed: "ExceptionType: message", or "Canceled".',
            },
            "created_at": stamp,
            "started_at": stamp,
            "completed_at": stamp,
            "progress": {
                **_nullable(
                    {
                        "type": "object",
                        "properties": {
                            "step": {"type": "integer", "minimum": 0},
                            "total": {"type": "integer", "minimum": 1},
                            "message": {"type": "string"},
                        },
                        "required": ["step", "total", "message"],
                    }
                ),
                "description": "The progress the model last reported (`tungstenkit.progress`) for a batch "
                "holding this prediction; null if none.",
            },
            "logs": {
                **_nullable({"type": "string"}),
                "description": "What the model printed or logged while running this prediction's batches: "
                "the last bytes (TUNGSTEN_MAX_LOG_BYTES), after a line \"[earlier logs dropped]\" when some "
                "were dropped; null if nothing.",
            },
        },
        "required": ["outputs", "status", "error_message"],
    }
    return {
        "PredictionCreated": {
            "type": "object",
            "properties": {"prediction_id": {"type": "string", "pattern": "^[0-9a-f]{32}$"}},
            "required": ["prediction_id"],
        },
        "Prediction": prediction,
        "WebhookDelivery": {
            "description": "What a webhook receives: the prediction, with its id and the event.",
            "allOf": [
                {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string", "description": "The prediction id."},
                        "event": {"type": "string", "enum": list(EVENTS)},
                        "output_events": {
                            "type": "array",
                            "description": "output events only: the partial outputs since the previous output "
                            "webhook, one list of {index, output} per yield of the model.",
                            "items": {"type": "array", "items": {"type": "object"}},
                        },
                    },
                    "required": ["id", "event"],
                },
                _own("Prediction"),
            ],
        },
        "Error": {
            "type": "object",
            "properties": {"detail": {"description": "What went wrong."}},
            "required": ["detail"],
        },
        "ValidationError": {
            "type": "object",
            "properties": {
                "detail": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "loc": {
                                "type": "array",
                                "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                                "description": 'Where: ["body", <input index>, <field>] or ["query", <parameter>].',
                            },
                            "msg": {"type": "string"},
                            "type": {"type": "string"},
                        },
                        "required": ["loc", "msg", "type"],
                    },
                }
            },
            "required": ["detail"],
        },
        "Health": {
            "type": "object",
            "properties": {
                "status": {"type": "string", "enum": ["ok", "no_ready_workers", "draining", "unavailable"]},
                "redis": {"type": "string", "enum": ["ok", "unreachable"]},
                "queued_inputs": {"type": "integer"},
                "ready_workers": {"type": "integer"},
                "workers": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "description": "A live worker: id, host, pid, model, state, batch_size, max_batch_size (smaller "
                        "once a batch ran out of GPU memory), current_batch, "
                        "heartbeat_at, inputs_per_s and more.",
                        "additionalProperties": True,
                    },
                },
            },
            "required": ["status", "redis", "workers"],
        },
        "ApiHealth": {
            "type": "object",
            "description": "GET /health?scope=api: this API process alone.",
            "properties": {"status": {"type": "string", "enum": ["ok", "draining"]}},
            "required": ["status"],
        },
        "Metadata": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "model_class": {"type": "string"},
                "batch_size": {"type": "integer"},
                "input_schema": {"type": "object"},
                "output_schema": {"type": "object"},
            },
        },
        "Inputs": {
            "type": "array",
            "minItems": 1,
            "maxItems": max_inputs,
        },
    }


def _json(schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _own(schema)}}}


def _health(description: str, also: dict[str, Any] | None = None) -> dict[str, Any]:
    schema = {"anyOf": [_own("Health"), _own("ApiHealth"), *([also] if also else [])]}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    described = {
        400: ("Error", "The body is not valid JSON, or nests too deep."),
        404: ("Error", "No such prediction (never created, or expired)."),
        413: ("Error", "The body, or a file input, is over its size limit."),
        415: ("Error", "The body is not sent as Content-Type: application/json."),
        422: (
            "ValidationError",
            "Invalid inputs, query parameters or headers (an Idempotency-Key used with another request); "
            "`loc` says where.",
        ),
        429: ("Error", "The queue is full; retry after Retry-After seconds."),
        503: (
            "Error",
            (
                "Redis is unreachable or full, the server is shutting down, or this process holds as many "
                "requests or request bodies as it may; retry after Retry-After seconds."
            ),
        ),
        504: ("Error", "The prediction did not finish in time; poll GET /predictions/{prediction_id}."),
    }
    return {str(code): _json(*described[code]) for code in codes}


#: What any request may get from the server's connection guards, before its handler runs.
_CONNECTION_ERRORS = {
    "408": _json("Error", "The request head did not arrive in time (the connection is closed)."),
    "431": _json("Error", "The request line and headers are over their size limit (the connection is closed)."),
}
_BUSY = _json("Error", "This process has as many requests in progress as it may; retry after Retry-After seconds.")


def _with_connection_errors(paths: dict[str, Any]) -> dict[str, Any]:
    """Every operation also documents 408, 431 and the 503 of a full process."""
    for operations in paths.values():
        for operation in operations.values():
            responses = operation["responses"]
            for code, response in _CONNECTION_ERRORS.items():
                responses.setdefault(code, response)
            responses.setdefault("503", _BUSY)
    return paths


#: The operations that need an API key when keys are on (``/metrics`` too with
#: ``metrics_require_key``), with the scope each needs.
_KEYED = {
    ("/predictions", "post"): "predict",
    ("/predict", "post"): "predict",
    ("/predictions/{prediction_id}", "get"): "read",
    ("/predictions/{prediction_id}/events", "get"): "read",
    ("/predictions/{prediction_id}/cancel", "post"): "predict",
    ("/predictions/{prediction_id}/cancel", "get"): "predict",
    ("/files/{name}", "get"): "read",
}
_SECURITY_SCHEME = "apiKey"


def _with_api_keys(paths: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """With API keys on: which operations need one, and their 401, 403 and 429."""
    keyed = dict(_KEYED)
    if settings.metrics_require_key:
        keyed[("/metrics", "get")] = "admin"
    for (path, method), scope in keyed.items():
        operation = paths[path][method]
        operation["security"] = [{_SECURITY_SCHEME: []}]
        operation["description"] = (operation.get("description", "") + f" Needs an API key with the scope {scope} "
                                    "(admin: any prediction; others: their owner's only).").strip()
        responses = operation["responses"]
        responses["401"] = {
            **_json("Error", "No API key, or one that is unknown, revoked or mistyped."),
            "headers": {"WWW-Authenticate": {"schema": {"type": "string", "enum": ["Bearer"]}}},
        }
        responses["403"] = _json("Error", f"The API key's scope is too small (this needs {scope}).")
        responses["429"] = _json(
            "Error", "The queue is full, or this API key sent more requests per second, or has more inputs "
            "queued, than it may; retry after Retry-After seconds.",
        )
        if "404" in responses:
            responses["404"] = _json("Error", "No such prediction (never created, expired, or another key's).")
    return paths


def _links_to_the_prediction() -> dict[str, Any]:
    """From a created prediction to reading and canceling it (for clients and test tools)."""
    prediction_id = {"prediction_id": "$response.body#/prediction_id"}
    return {
        "GetPrediction": {"operationId": "get_prediction", "parameters": prediction_id},
        "CancelPrediction": {"operationId": "cancel_prediction", "parameters": prediction_id},
        "CancelPredictionWithGet": {"operationId": "cancel_prediction_get", "parameters": prediction_id},
    }


def _submit_parameters() -> list[dict[str, Any]]:
    """What a submit takes besides its body: the webhook and the request's own options."""
    return [
        *_webhook_parameters(),
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "description": "Makes retries safe: a request sent again with the same key and the same body and "
            "parameters, within the result TTL, is answered with the prediction the first one created (and "
            "the header Idempotent-Replayed: true) instead of queuing another; the same key with another "
            "request is a 422. Keys are scoped to the API key (one scope without keys).",
            "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x20-\\x7e]+$"},
        },
        {
            "name": "deadline_s",
            "in": "query",
            "required": False,
            "description": "Seconds within which a worker must start the prediction; one not started by "
            'then fails with error_message "Deadline exceeded" without running (one already running is not '
            f"interrupted). Also as the header {DEADLINE_HEADER}; the query wins.",
            "schema": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_DEADLINE_S},
        },
        {
            "name": "priority",
            "in": "query",
            "required": False,
            "description": "When the workers have more queued than they can take, higher priorities are "
            "admitted first: of every 7 chunks admitted while all three wait, 4 high, 2 normal, 1 low "
            "(a priority with nothing waiting gives its turns to the highest that has).",
            "schema": {"type": "string", "enum": list(PRIORITIES), "default": "normal"},
        },
        {
            "name": DEADLINE_HEADER,
            "in": "header",
            "required": False,
            "description": "The same as deadline_s.",
            "schema": {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?$"},
        },
    ]


def _replayed_header() -> dict[str, Any]:
    return {
        "Idempotent-Replayed": {
            "description": "true when the Idempotency-Key came with the same request before: this is the "
            "prediction that request created, and nothing new was queued.",
            "schema": {"type": "string", "enum": ["true"]},
        }
    }


def _webhook_parameters() -> list[dict[str, Any]]:
    return [
        {
            "name": "webhook",
            "in": "query",
            "required": False,
            "description": "A URL to POST the prediction to when it completes (and, if asked, when it starts, "
            "and as partial outputs and logs arrive). Deliveries are signed and retried with backoff; the "
            "address must be public.",
            "schema": {"type": "string", "format": "uri", "maxLength": MAX_URL_LENGTH},
        },
        {
            "name": "webhook_events",
            "in": "query",
            "required": False,
            "description": "Which events to deliver, comma-separated: start, output, logs, completed "
            "[completed]. output and logs are sent at most every 500 ms per prediction, never after completed "
            "(which follows them always).",
            "schema": {"type": "string", "examples": ["start,completed", "output,logs,completed"]},
        },
    ]


def _callbacks() -> dict[str, Any]:
    def header(name: str, description: str) -> dict[str, Any]:
        return {"name": name, "in": "header", "required": True, "description": description, "schema": {"type": "string"}}

    return {
        "webhook": {
            "{$request.query.webhook}": {
                "post": {
                    "summary": "The prediction, when an event it asked for happens",
                    "parameters": [
                        header(SIGNATURE_HEADER, 't=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>"> '
                               "with the webhook secret (`tungsten status --webhook-secret`)."),
                        header(EVENT_HEADER, "start, output, logs or completed."),
                        header(DELIVERY_HEADER, "The same for every retry of one delivery (deduplicate on it)."),
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _own("WebhookDelivery")}},
                    },
                    "responses": {
                        "2XX": {"description": "Received. Any other answer, or none in time, is retried."}
                    },
                }
            }
        }
    }


def build_openapi(definition: ModelDefinition, settings: Settings, model_name: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the API serving ``definition``."""
    input_name, output_name, schemas = _model_schemas(definition, settings)
    ours = _api_schemas(output_name, settings.max_inputs_per_request)
    ours["Inputs"]["items"] = _ref(input_name)
    prediction_id = {
        "name": "prediction_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
    }
    inputs_body = {
        "required": True,
        "description": f"A list of 1 to {settings.max_inputs_per_request} inputs of the model "
        f"(at most {settings.max_body_bytes} bytes).",
        "content": {"application/json": {"schema": _own("Inputs")}},
    }
    cancel = {
        "summary": "Cancel a prediction",
        "description": 'A canceled prediction reads failed with error_message "Canceled"; '
        "canceling one that ended changes nothing.",
        "parameters": [prediction_id],
        "responses": {"200": _json("Prediction", "The prediction after the cancel."), **_errors(404, 503)},
    }
    paths: dict[str, Any] = {
        "/": {
            "get": {
                "operationId": "metadata",
                "summary": "The served model (or, for a browser, its demo page)",
                "description": "API clients get the model's metadata as JSON. A browser (`Accept: text/html` "
                "before `application/json`) gets the demo page: a form built from `input_schema` that runs "
                "predictions and shows their outputs.",
                "responses": {
                    "200": {
                        "description": "Model name, class, input and output schemas, batch size; or the demo page.",
                        "content": {
                            "application/json": {"schema": _own("Metadata")},
                            "text/html": {"schema": {"type": "string"}},
                        },
                    }
                },
            }
        },
        "/health": {
            "get": {
                "operationId": "health",
                "summary": "Readiness",
                "description": "200 when Redis answers and a worker has the model loaded; 503 otherwise. "
                "With scope=api: 200 while this API process takes predictions (it is not shutting down), "
                "whether or not Redis answers and workers run; for probes of the API alone.",
                "parameters": [
                    {
                        "name": "scope",
                        "in": "query",
                        "required": False,
                        "description": "model: can the model serve (Redis and a ready worker); "
                        "api: does this API process take predictions.",
                        "schema": {"type": "string", "enum": ["model", "api"], "default": "model"},
                    }
                ],
                "responses": {
                    "200": _health("Ready: the live workers and the queue depth (scope=api: only the status)."),
                    "503": _health(
                        "Not ready: Redis is unreachable or no worker is ready (scope=api: shutting down); or, "
                        "as Error, this process has as many requests in progress as it may.",
                        also=_own("Error"),
                    ),
                    **_errors(422),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "Metrics in the Prometheus text format, the same from every API process.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_errors(503),
                },
            }
        },
        "/predictions": {
            "post": {
                "operationId": "create_prediction",
                "summary": "Create a prediction",
                "description": "Queues the inputs and answers at once with the prediction's id; with "
                "stream=true, answers with the prediction's event stream instead (as GET "
                "/predictions/{prediction_id}/events; the id is in the X-Prediction-Id header and the queued "
                "event).",
                "parameters": [
                    *_submit_parameters(),
                    {
                        "name": "stream",
                        "in": "query",
                        "required": False,
                        "description": "Answer with the event stream (text/event-stream) rather than the id.",
                        "schema": {"type": "boolean", "default": False},
                    },
                ],
                "requestBody": inputs_body,
                "responses": {
                    "200": {
                        **_json("PredictionCreated", "Accepted (with stream=true: its events)."),
                        "headers": _replayed_header(),
                        "content": {
                            "application/json": {"schema": _own("PredictionCreated")},
                            "text/event-stream": {"schema": {"type": "string"}},
                        },
                        "links": _links_to_the_prediction(),
                    },
                    **_errors(400, 413, 415, 422, 429, 503),
                },
                "callbacks": _callbacks(),
            }
        },
        "/predictions/{prediction_id}": {
            "get": {
                "operationId": "get_prediction",
                "summary": "A prediction's status and outputs",
                "parameters": [
                    prediction_id,
                    {
                        "name": "wait",
                        "in": "query",
                        "required": False,
                        "description": f"Hold the answer up to this many seconds (at most {settings.max_wait_s:g}) "
                        "until the prediction ends.",
                        "schema": {"type": "number", "minimum": 0},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "The prediction (with Accept: text/event-stream, its events, as "
                        "GET /predictions/{prediction_id}/events).",
                        "content": {
                            "application/json": {"schema": _own("Prediction")},
                            "text/event-stream": {"schema": {"type": "string"}},
                        },
                    },
                    **_errors(400, 404, 422, 503),
                },
            }
        },
        "/predictions/{prediction_id}/events": {
            "get": {
                "operationId": "prediction_events",
                "summary": "A prediction's events (server-sent events)",
                "description": EVENTS_DESCRIPTION,
                "parameters": [
                    prediction_id,
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "description": "The id of the last event received: the stream resumes after it, from "
                        "any API process (an EventSource sends it when it reconnects).",
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "last_event_id",
                        "in": "query",
                        "required": False,
                        "description": "The same as the Last-Event-ID header, for clients that cannot set it.",
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "The events, until completed.",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    "204": {"description": "Last-Event-ID was the completed event: nothing follows."},
                    **_errors(400, 404, 503),
                },
            }
        },
        "/predictions/{prediction_id}/cancel": {
            "post": {**cancel, "operationId": "cancel_prediction"},
            "get": {**cancel, "operationId": "cancel_prediction_get"},
        },
        "/predict": {
            "post": {
                "operationId": "predict",
                "summary": "Predict and wait for the result",
                "description": f"Like POST /predictions, then waits (at most {settings.sync_timeout_s:g}s) "
                "and answers like GET /predictions/{prediction_id}."
                + (
                    " A client that disconnects before the prediction ended cancels it, unless the request "
                    "carried an Idempotency-Key."
                    if settings.cancel_on_disconnect
                    else ""
                ),
                "parameters": _submit_parameters(),
                "requestBody": inputs_body,
                "responses": {
                    "200": {**_json("Prediction", "The prediction once it ended."), "headers": _replayed_header()},
                    **_errors(400, 413, 415, 422, 429, 503, 504),
                },
                "callbacks": _callbacks(),
            }
        },
        "/files/{name}": {
            "get": {
                "operationId": "get_file",
                "summary": "An output file (with TUNGSTEN_OUTPUT_FILES=url)",
                "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {
                    "200": {"description": "The file.", "content": {"*/*": {"schema": {}}}},
                    **_errors(404, 503),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "responses": {
                    "200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}}
                },
            }
        },
        "/docs": {
            "get": {
                "operationId": "docs",
                "summary": "Interactive documentation (works offline)",
                "responses": {"200": {"description": "An HTML page.", "content": {"text/html": {"schema": {"type": "string"}}}}},
            }
        },
    }
    for path, item in paths.items():
        for operation in item.values():
            operation["tags"] = [_TAGS.get(path, "Predictions")]
    # The model's classes keep their names; an API schema whose name one of them took is renamed.
    names = {name: _free_name(name, schemas) for name in ours}
    schemas.update({names[name]: _settle_refs(schema, names) for name, schema in ours.items()})
    if settings.api_keys:
        paths = _with_api_keys(paths, settings)
    paths = _settle_refs(_with_connection_errors(paths), names)
    description = (
        f"REST API serving the model `{model_name}` ({definition.name}). POST a list of inputs to "
        "/predictions, then GET /predictions/{prediction_id} (with ?wait= to long-poll) or ask for a webhook."
    )
    if definition.config.readme_md:
        description += "\n\n" + definition.config.readme_md
    components: dict[str, Any] = {"schemas": schemas}
    if settings.api_keys:
        components["securitySchemes"] = {
            _SECURITY_SCHEME: {
                "type": "http",
                "scheme": "bearer",
                "description": "An API key made with `tungsten keys create`, sent as `Authorization: Bearer tk_...`.",
            }
        }
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": model_name, "version": __version__, "description": description},
        "tags": _TAG_DESCRIPTIONS,
        "paths": paths,
        "components": components,
    }


def _free_name(name: str, taken: dict[str, Any]) -> str:
    while name in taken:
        name = f"Api{name}"
    return name


def _settle_refs(node: Any, names: dict[str, str]) -> Any:
    """``node`` with its references to the API's own schemas under their final names."""
    if isinstance(node, list):
        return [_settle_refs(item, names) for item in node]
    if not isinstance(node, dict):
        return node
    settled = {key: _settle_refs(value, names) for key, value in node.items()}
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith(_OWN):
        settled["$ref"] = _REF.format(model=names[ref[len(_OWN) :]])
    return settled


async def openapi(request: Request) -> Response:
    return JSONResponse(request.app.state.openapi)
