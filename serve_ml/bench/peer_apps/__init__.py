"""The peers of ``serve-ml bench peers``: the same bundle served by MLServer, LitServe,
BentoML and plain FastAPI, each run by the bench in a virtualenv of its own.

These modules are not imported by serve-ml itself: each runs inside its peer's
virtualenv, where only that framework and the model core (``serve_ml.core`` and
``serve_ml.bundles``, copied in by the bench) exist. :mod:`.model` is the one piece
they share, so every peer runs exactly the model code serve-ml runs.
"""
