"""The reference job-queue service: the HTTP contract `HttpJobCreator` speaks, made durable with SQLite,
plus the claim/complete/fail endpoints workers need. Small enough to read, strict enough to test triggers
against."""
