"""Trigger sources: one package per kind of event that creates jobs, each holding its spec model, its
pure logic, its trigger and its status; `common` holds what they share, `catalog` lists them."""
