"""serve-ml: predictive-maintenance model serving on Ray Serve.

Layers, imported one way only (``tests/unit/test_layers.py`` checks it):
``cli -> bench -> {deployments, pipelines} -> scoring -> bundles -> core``; the two
in braces never import each other. Nothing here reads the environment or starts
clients at import time; build a :class:`~serve_ml.core.settings.Settings` and pass it in.
"""

__version__ = "0.1.0"
