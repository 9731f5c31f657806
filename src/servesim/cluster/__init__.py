"""Many replicas behind a router: pools, routing, stale metrics and failures."""
