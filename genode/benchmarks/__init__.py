"""Benchmarks (`python -m launch.benchmark <name>`): each writes `<out>/<name>.{json,md}`.

`sampling`: sampler error vs NFE against exact endpoints and k-diffusion's samplers, and
diffrax vs `lax.scan` speed. `training`: train-step throughput of the named configs.
"""
