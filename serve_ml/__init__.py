"""serve-ml: predictive-maintenance model serving on Ray Serve.

Import layering (one way only): ``serve_ml.cli -> pipelines -> deployments -> bundles
-> serve_ml.{settings,errors}``. Nothing here reads the environment or starts
clients at import time; build a :class:`~serve_ml.settings.Settings` and pass it in.
"""

__version__ = "0.1.0"
