"""Benchmarks (installed as flexvar.bench): `python -m flexvar.bench.steps_latency` or `flexvar bench`."""
