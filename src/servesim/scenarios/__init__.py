"""Packaged scenarios (the default one that `servesim run` uses without arguments)."""
