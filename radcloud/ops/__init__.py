"""Operator tooling: the local stack, the CLI, sample data, deploy, doctor. The runtime never imports it."""
