"""radcloud: radiology in the cloud.

The domain library behind the OpenWhisk actions in ``functions/`` and the
plugins in ``plugins/``: one module per external system (Orthanc, object
storage, Redis job store, ...) plus the job model. It never imports
``localwhisk``: the same code runs on a real OpenWhisk.
"""

__version__ = "0.1.0"
