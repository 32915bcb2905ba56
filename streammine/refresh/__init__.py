"""Model versions (checkpoints marked complete), the watcher, and the refresh that swaps in new shards."""
