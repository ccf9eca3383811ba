"""`spec.schedule`, the one model of a schedule: its validation (shared by `portico validate`, the
operator and the CRD) and the seed's `ScheduleConfig`, which builds it."""

from datetime import date
from typing import Any

import pytest
from pydantic import ValidationError

from portico.domain.trigger import JobTemplate
from portico.sources.schedule.source import ScheduleSource
from portico.sources.schedule.spec import ScheduleConfig, ScheduleSpec, default_name


def errors(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationError) as info:
        ScheduleSpec.model_validate(data)
    return [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in info.value.errors()]


def test_defaults_and_camel_case() -> None:
    spec = ScheduleSpec.model_validate({"cron": "0 9 * * *"})
    assert spec.to_resource() == {
        "cron": "0 9 * * *",
        "timeZone": "UTC",
        "jitterSeconds": 0,
        "exclusionDates": [],
        "catchUp": "Latest",
        "concurrencyPolicy": "Allow",
    }
    full = {
        "cron": "*/30 * * * * *",
        "timeZone": "Europe/Berlin",
        "startingDeadlineSeconds": 300,
        "jitterSeconds": 20,
        "exclusionDates": ["2026-12-25", date(2026, 12, 26)],
        "catchUp": "All",
        "concurrencyPolicy": "Forbid",
    }
    spec = ScheduleSpec.model_validate(full)
    assert spec.exclusion_dates == [date(2026, 12, 25), date(2026, 12, 26)]
    assert ScheduleSpec.model_validate(spec.to_resource()) == spec


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"cron": "61 * * * *"},
            "cron: Value error, cron expression '61 * * * *': minute field '61': 61 is out of range 0-59",
        ),
        ({"cron": "0 9 * *"}, "has 4 fields; expected 5"),
        ({"cron": "@every 5x"}, "@every duration '5x' is not a duration like 30s"),
        ({"cron": "0 0 31 2 *"}, "never fires"),
        ({"cron": ""}, "cron: String should have at least 1 character"),
        (
            {"cron": "0 9 * * *", "timeZone": "Europe/Gotham"},
            "timeZone: Value error, unknown time zone 'Europe/Gotham'",
        ),
        (
            {"cron": "0 9 * * *", "jitterSeconds": 3601},
            "jitterSeconds: Input should be less than or equal to 3600",
        ),
        (
            {"cron": "0 9 * * *", "jitterSeconds": 300, "startingDeadlineSeconds": 300},
            "jitterSeconds (300) must be less than startingDeadlineSeconds (300)",
        ),
        (
            {"cron": "0 9 * * *", "startingDeadlineSeconds": 0},
            "startingDeadlineSeconds: Input should be greater than or equal to 1",
        ),
        (
            {"cron": "0 9 * * *", "exclusionDates": ["2026-02-30"]},
            "exclusionDates.0: Input should be a valid date",
        ),
        ({"cron": "0 9 * * *", "catchUp": "Sometimes"}, "catchUp: Input should be 'None', 'Latest' or 'All'"),
        (
            {"cron": "0 9 * * *", "concurrencyPolicy": "Replace"},
            "concurrencyPolicy: Input should be 'Allow' or 'Forbid'",
        ),
        ({"cron": "0 9 * * *", "timezone": "UTC"}, "timezone: Extra inputs are not permitted"),
    ],
)
def test_invalid_specs_name_the_field_and_the_problem(data: dict[str, Any], message: str) -> None:
    found = errors(data)
    assert any(message in e for e in found), found


def test_the_operator_spec_check_reports_the_exact_problem() -> None:
    """`portico validate` and the operator run `parse_spec`; the schedule block's errors come through with
    their field path."""
    from portico.operator.resource import SpecError, parse_spec

    spec: dict[str, Any] = {
        "job": {"type": "report.daily"},
        "schedule": {"cron": "0 25 * * *", "timeZone": "Mars/Base"},
    }
    with pytest.raises(SpecError) as info:
        parse_spec(spec, [ScheduleSource])
    problems = info.value.errors
    assert any(
        "spec.schedule.cron" in p and "hour field '25': 25 is out of range 0-23" in p for p in problems
    ), problems
    assert any("spec.schedule.timeZone" in p and "unknown time zone 'Mars/Base'" in p for p in problems), (
        problems
    )
    spec["schedule"] = {"cron": "@every 1h30m", "timeZone": "Europe/Berlin"}
    parsed = parse_spec(spec, [ScheduleSource])
    assert parsed.source == "schedule"
    assert parsed.source_spec == ScheduleSpec(cron="@every 1h30m", time_zone="Europe/Berlin")


def test_json_schema_describes_every_field_and_carries_the_cel_rule() -> None:
    schema = ScheduleSpec.model_json_schema(by_alias=True)
    properties = schema["properties"]
    assert set(properties) == {
        "cron",
        "timeZone",
        "startingDeadlineSeconds",
        "jitterSeconds",
        "exclusionDates",
        "catchUp",
        "concurrencyPolicy",
    }
    assert all(p.get("description", "").endswith(".") for p in properties.values()), properties
    assert properties["catchUp"]["enum"] == ["None", "Latest", "All"]
    assert properties["exclusionDates"]["items"] == {"format": "date", "type": "string"}
    [rule] = schema["x-kubernetes-validations"]
    assert "jitterSeconds < self.startingDeadlineSeconds" in rule["rule"]
    assert schema["required"] == ["cron"]


# --- ScheduleConfig: the seed's form, building the spec and the job template ------------------------------


def test_the_seed_form_builds_a_spec_and_a_job_template() -> None:
    config = ScheduleConfig(
        cron="0 9 * * *",
        job_type="report.daily",
        payload={"report_type": "daily_summary"},
        queue_name="reports",
        priority=5,
    )
    assert config.spec == ScheduleSpec(cron="0 9 * * *")
    assert config.job == JobTemplate(
        type="report.daily", queue="reports", priority=5, payload={"report_type": "daily_summary"}
    )
    assert (config.cron, config.job_type, config.payload, config.queue_name, config.priority) == (
        "0 9 * * *",
        "report.daily",
        {"report_type": "daily_summary"},
        "reports",
        5,
    )
    assert config.metadata == {}
    assert config.name is None
    assert config == ScheduleConfig(
        "0 9 * * *", "report.daily", {"report_type": "daily_summary"}, "reports", 5
    )


def test_every_spec_field_is_given_in_snake_case() -> None:
    config = ScheduleConfig(
        cron="*/30 * * * * *",
        job_type="sync",
        time_zone="Europe/Berlin",
        starting_deadline_seconds=300,
        jitter_seconds=20,
        exclusion_dates=[date(2026, 12, 25)],
        catch_up="All",
        concurrency_policy="Forbid",
        name="half-minute",
    )
    assert config.spec.to_resource() == {
        "cron": "*/30 * * * * *",
        "timeZone": "Europe/Berlin",
        "startingDeadlineSeconds": 300,
        "jitterSeconds": 20,
        "exclusionDates": ["2026-12-25"],
        "catchUp": "All",
        "concurrencyPolicy": "Forbid",
    }
    assert config.name == "half-minute"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cron": "0 25 * * *"}, "hour field '25': 25 is out of range 0-23"),
        ({"time_zone": "Mars/Base"}, "unknown time zone 'Mars/Base'"),
        (
            {"jitter_seconds": 60, "starting_deadline_seconds": 60},
            "must be less than startingDeadlineSeconds",
        ),
        ({"catch_up": "Sometimes"}, "Input should be 'None', 'Latest' or 'All'"),
        ({"timezone": "UTC"}, "Extra inputs are not permitted"),
        ({"job_type": ""}, "String should have at least 1 character"),
        ({"priority": 10**6}, "Input should be less than or equal to"),
        ({"queue_name": "bad\nqueue"}, "control character"),
        ({"payload": {"n": float("nan")}}, "payload"),
    ],
)
def test_invalid_values_are_refused_by_the_spec_or_the_job_template(
    kwargs: dict[str, Any], message: str
) -> None:
    arguments: dict[str, Any] = {"cron": "0 9 * * *", "job_type": "report.daily", **kwargs}
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ScheduleConfig(**arguments)


def test_models_already_validated_are_taken_as_they_are() -> None:
    spec = ScheduleSpec(cron="0 9 * * *", time_zone="Europe/Berlin")
    template = JobTemplate(type="report.daily")
    config = ScheduleConfig.of(spec, template, name="morning")
    assert (config.spec, config.job, config.name) == (spec, template, "morning")
    assert config.spec is spec and config.job is template


def test_the_timetable_is_shared_by_specs_of_the_same_schedule() -> None:
    a = ScheduleSpec(cron="0 9 * * *", exclusion_dates=[date(2026, 12, 25)])
    b = ScheduleSpec.model_validate({"cron": "0 9 * * *", "exclusionDates": ["2026-12-25"]})
    assert a.timetable is b.timetable
    assert a.timetable is not ScheduleSpec(cron="0 9 * * *").timetable


def test_the_default_trigger_name_is_the_same_as_before_the_spec_became_the_one_model() -> None:
    """A library trigger without a ref is named after a digest of its schedules, and its idempotency keys
    after that name: the digest must not change across an upgrade, or a run re-sent by the upgraded
    process would be a new job."""
    seed = [
        ScheduleConfig("0 9 * * *", "report.daily", {"report_type": "daily_summary"}, "reports", 5),
        ScheduleConfig("0 * * * *", "cleanup.temp_files", {"max_age_hours": 24}, "maintenance", 1),
    ]
    assert default_name(seed) == "schedule-ebe76cd16e0c"
    full = ScheduleConfig(
        cron="*/5 * * * * *",
        job_type="x.y",
        payload={"a": [1, 2.5, None, "é"]},
        metadata={"team": "t"},
        name="n",
        time_zone="Europe/Berlin",
        starting_deadline_seconds=60,
        jitter_seconds=3,
        exclusion_dates=[date(2026, 12, 25)],
        catch_up="All",
        concurrency_policy="Forbid",
    )
    assert default_name([full]) == "schedule-ecb5000862cd"
    assert default_name([seed[1], seed[0]]) != default_name(seed)
