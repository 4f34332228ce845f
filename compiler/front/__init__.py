"""Stage 1-2, the front end: YAML text to plain data with a position for every value (load), ``--set`` overrides,
names, and the strict pydantic ``Spec`` (spec, expr).
"""
