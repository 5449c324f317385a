"""Declarative tables that the rest of the studio reads: which model families and adapter types exist.

Nothing here imports torch or any other part of `studio`, so the config schema, the CLI, the UI and
the tiny-model writer can all read the same rows without loading a model library. The code that
implements a row is named by a `"module:attribute"` string and imported only when it is used.
See docs/architecture.md ("Registries").
"""
