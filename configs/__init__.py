"""Experiment configs: one `get_config(arg=None)` per file, derived from `configs.base`.

Launch an experiment with `python -m launch.train --config=configs/<name>.py --workdir=DIR`;
`--config=configs/<name>.py:runlocal` shrinks it to a CPU smoke test, and
`--config.a.b=value` overrides a field.
"""
