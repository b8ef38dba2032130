"""Running a plugin on a shard: the plugin registry, the shard runner, the sandbox, memory and resource limits."""
