"""The OpenAPI 3 description served at `/openapi.json`. Built from the same limits the validation uses,
and from the settings (the bearer scheme and 401 answers appear only when a token is configured), so the
document describes the running service exactly."""

from typing import Any

from portico import __version__
from portico.domain.input_policy import MAX_DEPTH, MAX_INTEGER, MIN_INTEGER, RULES
from portico.queue_service import validation as v
from portico.queue_service.settings import QueueServiceSettings
from portico.queue_service.store import STATUSES

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {JSON: {"schema": schema}}


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": _json_content(_ref("Error"))}
    if headers:
        response["headers"] = headers
    return response


_RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}
}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {"type": "string", "description": "What is wrong, for people."},
            "field": {
                "type": "string",
                "description": "The field, parameter or header at fault; for the input policy a JSON "
                "path ($.payload.a[0]).",
            },
            "rule": {
                "type": "string",
                "enum": list(RULES),
                "description": "The input-policy rule broken: nesting depth, finite numbers, 64-bit "
                "integers, valid Unicode, no control characters in identifiers.",
            },
        },
    },
    "JsonValue": {
        "description": "Any JSON value within the input policy (nesting, finite numbers within 64 bits).",
        "anyOf": [
            {"type": "string"},
            {"type": "number", "minimum": MIN_INTEGER, "maximum": MAX_INTEGER},
            {"type": "boolean"},
            {"type": "array", "items": _ref("JsonValue")},
            {"type": "object", "additionalProperties": _ref("JsonValue")},
        ],
        "nullable": True,
    },
    "Job": {
        "type": "object",
        "required": [
            "id",
            "job_type",
            "queue_name",
            "priority",
            "payload",
            "metadata",
            "status",
            "idempotency_key",
            "created_at",
            "updated_at",
            "run_at",
            "attempts",
            "max_attempts",
            "last_error",
            "lease_id",
            "lease_expires_at",
            "worker",
        ],
        "properties": {
            "id": {"type": "string"},
            "job_type": {"type": "string"},
            "queue_name": {"type": "string"},
            "priority": {"type": "integer", "description": "Higher runs first."},
            "payload": {"type": "object"},
            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
            "status": {"type": "string", "enum": list(STATUSES)},
            "idempotency_key": {"type": "string", "nullable": True},
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
            "run_at": {"type": "string", "format": "date-time", "description": "Not claimable before this."},
            "attempts": {"type": "integer", "minimum": 0, "description": "Times the job was claimed."},
            "max_attempts": {"type": "integer", "minimum": 1},
            "last_error": {"type": "string", "nullable": True},
            "lease_id": {"type": "string", "nullable": True, "description": "Set while running."},
            "lease_expires_at": {"type": "string", "format": "date-time", "nullable": True},
            "worker": {"type": "string", "nullable": True, "description": "Who claimed the job last."},
        },
    },
    "JobList": {
        "type": "object",
        "required": ["jobs", "next_cursor"],
        "properties": {
            "jobs": {"type": "array", "items": _ref("Job")},
            "next_cursor": {
                "type": "string",
                "nullable": True,
                "description": "Pass as `cursor` for the next page; null on the last page.",
            },
        },
    },
    "ClaimedJobs": {
        "type": "object",
        "required": ["jobs"],
        "properties": {"jobs": {"type": "array", "items": _ref("Job")}},
    },
    "CreateJob": {
        "type": "object",
        "additionalProperties": False,
        "required": ["job_type"],
        "properties": {
            "job_type": {
                "type": "string",
                "minLength": 1,
                "maxLength": v.MAX_JOB_TYPE_LENGTH,
                "pattern": v.IDENTIFIER_PATTERN,
            },
            "queue_name": {"type": "string", "pattern": v.QUEUE_NAME_PATTERN, "default": "default"},
            "priority": {
                "type": "integer",
                "minimum": v.PRIORITY_RANGE[0],
                "maximum": v.PRIORITY_RANGE[1],
                "default": 0,
                "description": "Higher runs first; equal priorities run in creation order.",
            },
            "payload": {
                "type": "object",
                "additionalProperties": _ref("JsonValue"),
                "default": {},
                "description": f"Free JSON within the input policy: at most {MAX_DEPTH} levels of nesting, "
                "finite numbers, integers within 64 bits, valid Unicode.",
            },
            "metadata": {"type": "object", "additionalProperties": {"type": "string"}, "default": {}},
            "max_attempts": {
                "type": "integer",
                "minimum": v.MAX_ATTEMPTS_RANGE[0],
                "maximum": v.MAX_ATTEMPTS_RANGE[1],
                "description": "Claims allowed before the job is dead (default: the service's setting).",
            },
        },
    },
    "Claim": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "worker": {
                "type": "string",
                "nullable": True,
                "minLength": 1,
                "maxLength": v.MAX_TEXT_LENGTH,
                "pattern": v.IDENTIFIER_PATTERN,
            },
            "lease_seconds": {
                "type": "number",
                "minimum": v.LEASE_SECONDS_RANGE[0],
                "maximum": v.LEASE_SECONDS_RANGE[1],
                "description": "How long the worker holds the job before it returns to the queue.",
            },
            "limit": {
                "type": "integer",
                "minimum": v.CLAIM_LIMIT_RANGE[0],
                "maximum": v.CLAIM_LIMIT_RANGE[1],
                "default": 1,
            },
        },
    },
    "Complete": {
        "type": "object",
        "additionalProperties": False,
        "required": ["lease_id"],
        "properties": {
            "lease_id": {
                "type": "string",
                "minLength": 1,
                "maxLength": v.MAX_TEXT_LENGTH,
                "description": "The lease of the claim that returned the job (409 when it is no longer "
                "held).",
            },
        },
    },
    "Extend": {
        "type": "object",
        "additionalProperties": False,
        "required": ["lease_id", "lease_seconds"],
        "properties": {
            "lease_id": {
                "type": "string",
                "minLength": 1,
                "maxLength": v.MAX_TEXT_LENGTH,
                "description": "The job's current lease (409 when it is no longer held or ran out).",
            },
            "lease_seconds": {
                "type": "number",
                "minimum": v.LEASE_SECONDS_RANGE[0],
                "maximum": v.LEASE_SECONDS_RANGE[1],
                "description": "The lease ends this many seconds from now.",
            },
        },
    },
    "Fail": {
        "type": "object",
        "additionalProperties": False,
        "required": ["lease_id"],
        "properties": {
            "lease_id": {"type": "string", "minLength": 1, "maxLength": v.MAX_TEXT_LENGTH},
            "error": {"type": "string", "nullable": True, "maxLength": v.MAX_ERROR_LENGTH},
            "retry": {
                "type": "boolean",
                "default": True,
                "description": "false: the job fails for good (status failed) without further attempts.",
            },
            "retry_delay_seconds": {
                "type": "number",
                "minimum": 0,
                "maximum": v.MAX_RETRY_DELAY,
                "default": 0,
            },
        },
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"type": "string", "enum": ["ok", "unavailable"]},
            "error": {"type": "string"},
        },
    },
}


def _job_id() -> dict[str, Any]:
    return {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}


def openapi_document(settings: QueueServiceSettings) -> dict[str, Any]:
    secured = settings.token is not None

    def operation(
        summary: str,
        responses: dict[str, Any],
        *,
        body: str | None = None,
        body_required: bool = False,
        parameters: list[dict[str, Any]] | None = None,
        operation_id: str,
    ) -> dict[str, Any]:
        op: dict[str, Any] = {"operationId": operation_id, "summary": summary, "parameters": parameters or []}
        all_responses = dict(responses)
        if body is not None:
            op["requestBody"] = {"required": body_required, "content": _json_content(_ref(body))}
            all_responses["413"] = _error(f"The body is larger than {settings.max_body_bytes} bytes.")
            all_responses["408"] = _error("The body was not received within the body timeout.")
            all_responses["415"] = _error(
                "The body is not application/json, or its Content-Encoding is not gzip, deflate or identity "
                "or does not decode."
            )
        if secured:
            op["security"] = [{"bearer": []}]
            all_responses["401"] = _error("The bearer token is missing or wrong.")
        all_responses["503"] = _error("The store is unavailable or overloaded; retry.", _RETRY_AFTER)
        op["responses"] = dict(sorted(all_responses.items()))
        return op

    bad_request = _error("Malformed JSON or an invalid field; `field` names it.")
    not_found = _error("No job has this id.")
    conflict = _error("The job is not running, or the lease given is no longer held.")
    job_response = {"content": _json_content(_ref("Job"))}

    paths: dict[str, Any] = {
        "/v1/jobs": {
            "post": operation(
                "Create a job (idempotent by Idempotency-Key)",
                {
                    "201": {"description": "Created.", **job_response},
                    "200": {
                        "description": "A job with this Idempotency-Key exists; it is returned.",
                        **job_response,
                    },
                    "400": bad_request,
                },
                body="CreateJob",
                body_required=True,
                parameters=[
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "description": "Requests with one key create one job; repeats get it back with 200.",
                        "schema": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": 255,
                            "pattern": v.IDEMPOTENCY_KEY_PATTERN,
                        },
                    }
                ],
                operation_id="createJob",
            ),
            "get": operation(
                "List jobs in creation order",
                {
                    "200": {"description": "A page of jobs.", "content": _json_content(_ref("JobList"))},
                    "400": bad_request,
                },
                parameters=[
                    {
                        "name": "queue",
                        "in": "query",
                        "schema": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": v.MAX_TEXT_LENGTH,
                            "pattern": v.IDENTIFIER_PATTERN,
                        },
                    },
                    {"name": "status", "in": "query", "schema": {"type": "string", "enum": list(STATUSES)}},
                    {
                        "name": "job_type",
                        "in": "query",
                        "schema": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": v.MAX_JOB_TYPE_LENGTH,
                            "pattern": v.IDENTIFIER_PATTERN,
                        },
                    },
                    {
                        "name": "metadata",
                        "in": "query",
                        "description": "KEY=VALUE: only jobs whose metadata maps KEY to exactly VALUE, e.g. "
                        "trigger.uid=<uid> for the jobs of one trigger.",
                        "schema": {"type": "string", "pattern": v.METADATA_FILTER_PATTERN},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {
                            "type": "integer",
                            "minimum": v.LIST_LIMIT_RANGE[0],
                            "maximum": v.LIST_LIMIT_RANGE[1],
                            "default": v.DEFAULT_LIST_LIMIT,
                        },
                    },
                    {
                        "name": "cursor",
                        "in": "query",
                        "description": "The `next_cursor` of the previous page.",
                        "schema": {"type": "string", "pattern": v.CURSOR_PATTERN},
                    },
                ],
                operation_id="listJobs",
            ),
        },
        "/v1/jobs/{job_id}": {
            "get": operation(
                "Get a job",
                {"200": {"description": "The job.", **job_response}, "404": not_found},
                parameters=[_job_id()],
                operation_id="getJob",
            ),
        },
        "/v1/queues/{queue}/claim": {
            "post": operation(
                "Lease runnable jobs: highest priority first, oldest first within a priority",
                {
                    "200": {
                        "description": "The leased jobs (none when the queue has nothing runnable).",
                        "content": _json_content(_ref("ClaimedJobs")),
                    },
                    "400": bad_request,
                },
                body="Claim",
                parameters=[
                    {
                        "name": "queue",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": v.QUEUE_NAME_PATTERN},
                    }
                ],
                operation_id="claimJobs",
            ),
        },
        "/v1/jobs/{job_id}/complete": {
            "post": operation(
                "Mark a running job completed",
                {
                    "200": {"description": "The completed job.", **job_response},
                    "400": bad_request,
                    "404": not_found,
                    "409": conflict,
                },
                body="Complete",
                body_required=True,
                parameters=[_job_id()],
                operation_id="completeJob",
            ),
        },
        "/v1/jobs/{job_id}/extend": {
            "post": operation(
                "Extend the lease of a running job (a worker still working on it)",
                {
                    "200": {"description": "The job with its new lease_expires_at.", **job_response},
                    "400": bad_request,
                    "404": not_found,
                    "409": conflict,
                },
                body="Extend",
                body_required=True,
                parameters=[_job_id()],
                operation_id="extendLease",
            ),
        },
        "/v1/jobs/{job_id}/fail": {
            "post": operation(
                "Record a failed attempt: retried while attempts remain, then dead",
                {
                    "200": {"description": "The job after the failure.", **job_response},
                    "400": bad_request,
                    "404": not_found,
                    "409": conflict,
                },
                body="Fail",
                body_required=True,
                parameters=[_job_id()],
                operation_id="failJob",
            ),
        },
        "/healthz": {
            "get": {
                "operationId": "health",
                "summary": "Liveness and readiness",
                "responses": {
                    "200": {"description": "Serving.", "content": _json_content(_ref("Health"))},
                    "503": {
                        "description": "The store is not usable.",
                        "content": _json_content(_ref("Health")),
                    },
                },
            },
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                },
            },
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "responses": {
                    "200": {"description": "OpenAPI 3.", "content": _json_content({"type": "object"})}
                },
            },
        },
    }
    document: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {
            "title": "Portico reference queue service",
            "version": __version__,
            "description": "Durable jobs for Portico triggers; claim/extend/complete/fail for workers.",
        },
        "paths": paths,
        "components": {"schemas": _SCHEMAS},
    }
    if secured:
        document["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return document
