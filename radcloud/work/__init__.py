"""Tracked work: the lifecycle every background job follows, and the executors that run its units.

A piece of tracked work (a plugin job, a retrieve, a pfcon job) is planned
into units (shards, series); each unit is submitted through an
:class:`radcloud.work.executors.base.Executor`, reports its own events into
Redis, is reconciled when it goes silent, and the work is finalised once.
"""
