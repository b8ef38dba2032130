"""Web action ``pfcon``: radcloud as a ChRIS compute resource (pfcon v6 API).

One raw web action (``web: raw``) routes every pfcon request on
``__ow_path`` + ``__ow_method``; see :mod:`radcloud.pfcon.web`. It runs
``public=True`` because CUBE authenticates with pfcon's own JWT, which
:func:`radcloud.pfcon.web.handle` checks on every route but ``health/`` and
``auth-token/``. Package parameters besides the settings: ``pfcon_bucket``
(ChRIS's bucket), ``pfcon_prefix`` (default ``/api/v1/``), ``pfcon_images``
(JSON image -> plugin name).
"""

from radcloud import pfcon
from radcloud.api.action import run
from radcloud.pfcon import protocol, web

_OPTIONS = ("pfcon_bucket", "pfcon_prefix", "pfcon_images")


def main(args):
    body = args.get("__ow_body")
    query = args.get("__ow_query") or ""
    opts = {name: pfcon.option(args, name) for name in _OPTIONS}
    # The raw body is parsed here (repeated form fields), not by the wrapper.
    rest = {k: v for k, v in args.items() if k != "__ow_body" and k not in _OPTIONS}

    def handle(request, settings, _principal):
        settings = pfcon.with_credentials(settings, args)
        fields = protocol.decode_body(body, request.headers.get("content-type", ""))
        images = pfcon.images_table(opts["pfcon_images"])

        def service(need_invoker):
            return pfcon.service_from_settings(settings, need_invoker=need_invoker,
                                               bucket=opts["pfcon_bucket"], images=images)

        return web.handle(request.method, request.path, request.headers, fields,
                          protocol.query_fields(query), settings, service,
                          prefix=opts["pfcon_prefix"] or web.DEFAULT_PREFIX)

    return web.pfcon_error(run(rest, handle, public=True))
