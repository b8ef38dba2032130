"""localwhisk: a single-machine, Docker-free runner compatible with Apache OpenWhisk.

It serves the OpenWhisk REST API subset (actions, packages, sequences,
activations, web actions) on 127.0.0.1 and runs Python actions through the
actionloop protocol in warm subprocesses (``localwhisk.runtime``). It is a
general tool: it imports nothing of radcloud and no DICOM library.

Layout (one job per module):

- ``api``          the socket-free core: ``Controller.handle(method, path, query, headers, body)``
- ``entities``     validation and shaping of actions and packages
- ``activations``  invoking: records, concurrency cap, thread pool
- ``sequences``    sequence checks and execution
- ``webactions``   ``/api/v1/web/...`` request/response rules
- ``store``        sqlite persistence in the state dir
- ``auth``         ``uuid:key`` credentials
- ``errors``       OpenWhisk's error body
- ``server``       the thin HTTP shell (uvicorn)
- ``manifest``     wskdeploy-style ``deploy -m manifest.yaml``
- ``testing``      start/stop a server from tests
- ``cli``          ``localwhisk serve|deploy``
"""

__version__ = "0.1.0"
