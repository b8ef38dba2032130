"""Benchmark fixture: a ds plugin that does nothing, so only radcloud's overhead is measured."""
