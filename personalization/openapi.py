"""The OpenAPI schema's parts drf-spectacular cannot see: the secret-key Bearer scheme, the public-key
endpoints (events, decide: plain Django views) and the error answers every endpoint can give.

Loaded by config/urls.py (the auth extension registers itself on import) and named in
SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"]. tests/personalization/test_openapi.py runs schemathesis
against the result.
"""

from drf_spectacular.extensions import OpenApiAuthenticationExtension

from personalization.ingest.schema import MAX_BATCH, MAX_PROPERTIES_CHARS

_ERROR = {
    "type": "object",
    "description": "What is wrong and how to fix it.",
    "properties": {
        "error": {
            "type": "object",
            "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            "required": ["field", "message"],
        }
    },
    "required": ["error"],
}
_DETAIL = {"type": "object", "properties": {"detail": {"type": "string"}}, "required": ["detail"]}
_ID = {"type": "string", "pattern": r"^[A-Za-z0-9_.:@+\-]{1,128}$", "maxLength": 128}
_PROPERTIES = {
    "type": "object",
    "description": f"Event properties: any JSON object up to {MAX_PROPERTIES_CHARS} characters.",
    "additionalProperties": True,
}
_EVENT = {
    "type": "object",
    "required": ["event_id", "type"],
    "description": "One behavior event. Give user_id or anonymous_id (or both).",
    "properties": {
        "event_id": {"type": "string", "pattern": r"^[A-Za-z0-9_.:\-]{1,64}$", "maxLength": 64},
        "type": {
            "type": "string",
            "description": "page_view, click, search, scroll, add_to_cart, purchase, exposure, identify or a "
            "custom snake_case name",
            "pattern": "^[a-z][a-z0-9_]{0,63}$",
        },
        "user_id": _ID,
        "anonymous_id": _ID,
        "session_id": {"type": "string", "maxLength": 64},
        "timestamp": {
            "description": "ISO 8601 with a time zone, or epoch milliseconds; within the last 30 days",
            "oneOf": [
                {"type": "string", "format": "date-time"},
                {"type": "number", "minimum": 0, "maximum": 1e13},
            ],
        },
        "value": {"type": "number", "minimum": 0, "maximum": 999_999_999_999},
        "properties": _PROPERTIES,
    },
}
_EVENTS_RESULT = {
    "type": "object",
    "properties": {
        "accepted": {"type": "integer"},
        "rejected": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "index": {"type": "integer"},
                    "field": {"type": "string"},
                    "message": {"type": "string"},
                },
            },
        },
        "dropped_noise": {"type": "integer"},
        "duplicates": {"type": "integer"},
    },
    "required": ["accepted", "rejected", "dropped_noise", "duplicates"],
}
_DECIDE_REQUEST = {
    "type": "object",
    "description": "Give user_id or anonymous_id.",
    "properties": {
        "user_id": {"type": "string", "maxLength": 128},
        "anonymous_id": {"type": "string", "maxLength": 128},
        "context": {
            "type": "object",
            "properties": {
                "url": {"type": "string"},
                "referrer": {"type": "string"},
                "device": {"type": "string"},
                "consent": {"type": "object", "additionalProperties": {"type": "boolean"}},
                "attributes": {"type": "object", "additionalProperties": True},
            },
        },
        "experiences": {"type": "array", "items": {"type": "string"}, "maxItems": 200},
    },
}
_DECIDE_ANSWER = {
    "type": "object",
    "properties": {
        "decision_id": {"type": "string"},
        "version": {"type": ["integer", "null"]},
        "assignments": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "properties": {
                    "variant": {"type": ["string", "null"]},
                    "payload": {},
                    "reason": {"type": "string"},
                    "version": {"type": ["integer", "null"]},
                },
            },
        },
        "unknown_experiences": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["decision_id", "assignments"],
}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _public_errors(bad_input: dict) -> dict:
    retry = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds to wait before retrying"}}
    return {
        "400": _json(bad_input, "Bad input; `error.field` names the field, `error.message` the fix."),
        "401": _json(_ERROR, "No key, or an unknown or revoked key."),
        "403": _json(_ERROR, "A key that may not call this endpoint (a secret key: use the public one)."),
        "405": _json(_ERROR, "Use POST."),
        "413": _json(_ERROR, "The body is too large."),
        "429": {**_json(_ERROR, "Too many requests from this key or address."), "headers": retry},
        "503": {**_json(_ERROR, "Events cannot be stored right now; retry the same batch."), "headers": retry},
    }


def _public_operation(*, operation_id: str, summary: str, request: dict, answer: dict, bad_input: dict) -> dict:
    return {
        "post": {
            "operationId": operation_id,
            "summary": summary,
            "tags": ["public (public key)"],
            "security": [{"publicKey": []}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": request}}},
            "responses": {"200": answer, **_public_errors(bad_input)},
        }
    }


def _rest_errors(path: str, operation: dict) -> dict:
    errors = {
        "401": _json(_DETAIL, "No credentials, or an unknown, revoked or public key."),
        "403": _json(_DETAIL, "Your role may not use this endpoint (see docs/user-guide.md: Permissions)."),
    }
    if "{" in path:
        errors["404"] = _json(_DETAIL, "Not found in your project.")
    takes_input = "requestBody" in operation or any(p.get("in") == "query" for p in operation.get("parameters", []))
    if takes_input:
        errors["400"] = _json(
            {"anyOf": [_ERROR, {"type": "object"}]},
            "Bad input; `error.field` names the field, `error.message` the fix.",
        )
    return errors


def schema_complete(result: dict, generator, request, public) -> dict:
    """drf-spectacular postprocessing hook: public endpoints, Bearer schemes, every status code."""
    schemes = result.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes["publicKey"] = {
        "type": "http",
        "scheme": "bearer",
        "description": "A project's public key (kp_…): decide and events only; safe in a web page.",
    }
    for path, operations in result.get("paths", {}).items():
        for operation in operations.values():
            if isinstance(operation, dict) and "responses" in operation:
                for status, response in _rest_errors(path, operation).items():
                    operation["responses"].setdefault(status, response)
    paths = result.setdefault("paths", {})
    paths["/api/v1/events"] = _public_operation(
        operation_id="events_send",
        summary=f"Send up to {MAX_BATCH} behavior events",
        request={
            "type": "object",
            "required": ["events"],
            "properties": {"events": {"type": "array", "items": _EVENT, "minItems": 1, "maxItems": MAX_BATCH}},
        },
        answer=_json(_EVENTS_RESULT, "Stored for processing; rejected events are listed with their index."),
        # A batch whose every event was rejected answers 400 with the same result body.
        bad_input={"anyOf": [_ERROR, _EVENTS_RESULT]},
    )
    paths["/api/v1/decide"] = _public_operation(
        operation_id="decide",
        summary="Every experience's variant for one visitor",
        request=_DECIDE_REQUEST,
        answer=_json(_DECIDE_ANSWER, "Assignments, each with its payload and reason."),
        bad_input=_ERROR,
    )
    return result


class SecretKeyScheme(OpenApiAuthenticationExtension):
    """The REST API's `Authorization: Bearer ks_…` in the schema."""

    target_class = "personalization.workspace.auth.SecretKeyAuthentication"
    name = "secretKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A project's secret key (ks_…): the REST API. Never put it in a web page.",
        }
