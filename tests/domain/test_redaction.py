import pytest

from portico.domain.redaction import (
    Redactor,
    dsn_location,
    dsn_password,
    url_location,
    url_password,
    url_without_credentials,
)


def test_redactor_hides_longest_secret_first_and_ignores_empty_values() -> None:
    redact = Redactor(["pass", "password-1", None, ""])
    assert redact("password-1 and pass") == "*** and ***"
    assert redact("nothing secret") == "nothing secret"


def test_redactor_uses_a_replacement_where_given() -> None:
    redact = Redactor()
    redact.add("postgresql://u:pw@db:5432/app", "db:5432/app")
    redact.add("pw")
    assert redact("could not reach postgresql://u:pw@db:5432/app (pw)") == "could not reach db:5432/app (***)"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("amqp://user:secret@mq:5673/prod", "mq:5673/prod"),
        ("amqp://user:secret@mq", "mq:5672//"),
        ("amqps://mq/%2Fteam", "mq:5671//team"),
        ("http://mq:notaport/x", "mq/x"),
    ],
)
def test_url_location_names_host_port_and_path_without_credentials(url: str, expected: str) -> None:
    assert url_location(url, {"amqp": 5672, "amqps": 5671}) == expected
    assert "secret" not in url_location(url)


def test_url_without_credentials_keeps_scheme_host_port_path() -> None:
    assert url_without_credentials("redis://:pw@cache:6380/2?ssl=true#x") == "redis://cache:6380/2"
    assert url_password("redis://:pw@cache:6380/2") == "pw"
    assert url_password("redis://cache") is None


@pytest.mark.parametrize(
    ("dsn", "location", "password"),
    [
        ("postgresql://app:s3cret@db:5433/orders", "db:5433/orders", "s3cret"),
        ("postgresql://app@db/", "db:5432/app", None),
        ("host=db port=5434 dbname=orders user=app password='a b'", "db:5434/orders", "a b"),
        ("user=app", "localhost:5432/app", None),
    ],
)
def test_dsn_location_and_password(dsn: str, location: str, password: str | None) -> None:
    assert dsn_location(dsn) == location
    assert dsn_password(dsn) == password
