"""Saying which server something is about without saying how to log in to it: what status, Events,
logs and errors may show of a broker URL, a database DSN or a token."""

import re
from collections.abc import Iterable, Mapping
from urllib.parse import unquote, urlsplit

PLACEHOLDER = "***"

_KEY_VALUE = re.compile(r"(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")


class Redactor:
    """Replaces every known secret value in a text (longest first, so a secret that contains another
    is hidden whole). Errors from client libraries quote URLs and DSNs: pass them through this first."""

    def __init__(self, secrets: Iterable[str | None] = (), *, placeholder: str = PLACEHOLDER) -> None:
        self.placeholder = placeholder
        self._secrets: list[str] = []
        self._replacements: dict[str, str] = {}
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str | None, replacement: str | None = None) -> None:
        """Hide `secret` from now on (as `replacement`, else the placeholder). Empty values are ignored:
        replacing "" would mangle every text."""
        if secret and secret not in self._secrets:
            self._secrets.append(secret)
            self._secrets.sort(key=len, reverse=True)
            if replacement is not None:
                self._replacements[secret] = replacement

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, self._replacements.get(secret, self.placeholder))
        return text


def url_location(url: str, default_ports: Mapping[str, int] | None = None) -> str:
    """`host:port/path` of a URL (`/` when it has no path): enough to recognise a broker's vhost or a
    database, nothing secret."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        port = (default_ports or {}).get(parts.scheme)
    path = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    return f"{host}:{port}/{path}" if port is not None else f"{host}/{path}"


def url_without_credentials(url: str) -> str:
    """The URL with user, password, query and fragment removed: `scheme://host:port/path`."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _dsn_fields(dsn: str) -> dict[str, str]:
    return {key: value.strip("'") for key, value in _KEY_VALUE.findall(dsn)}


def dsn_location(dsn: str) -> str:
    """`host:port/database` of a PostgreSQL DSN, URL or `key=value` form."""
    if "://" in dsn:
        parts = urlsplit(dsn)
        host = parts.hostname or "localhost"
        try:
            port = parts.port or 5432
        except ValueError:
            port = 5432
        database = unquote(parts.path.lstrip("/")) or (parts.username or "")
        return f"{host}:{port}/{database}"
    fields = _dsn_fields(dsn)
    database = fields.get("dbname", fields.get("user", ""))
    return f"{fields.get('host', 'localhost')}:{fields.get('port', '5432')}/{database}"


def dsn_password(dsn: str) -> str | None:
    """The password in a DSN, so a `Redactor` can hide it in the driver's errors."""
    if "://" in dsn:
        password = urlsplit(dsn).password
        return unquote(password) if password else None
    return _dsn_fields(dsn).get("password")


def url_password(url: str) -> str | None:
    password = urlsplit(url).password
    return unquote(password) if password else None
