"""Studies arriving at the archive (the watcher) and the rules that choose their pipeline."""
