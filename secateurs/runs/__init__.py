"""Runs: recipes (YAML, validated), their stages, the runner that carries them out, and compare."""
