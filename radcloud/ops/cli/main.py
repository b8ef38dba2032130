"""Entry point of the ``radcloud`` command; sub-commands live in sibling modules.

Exit codes: 0 ok, 1 failure, 2 usage, 3 a watched job/pull did not succeed,
4 not logged in / not allowed, 5 gave up waiting (see radcloud/ops/cli/common.py).
"""

from __future__ import annotations

import logging

import typer

from radcloud.ops.cli import arrivals, data, demo, deploy, doctor, jobs, routes, stack, users

# An unexpected error prints its traceback without local variables: typer's default shows them, and a
# command's locals hold passwords, tokens and S3 keys (tests/integration/local/test_cli_tracebacks.py).
app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False,
                  help="radcloud: PACS query/retrieve and image plugins as OpenWhisk actions.",
                  epilog="Exit codes: 0 ok, 1 failure, 2 usage/invalid request, 3 job or pull did not succeed, "
                         "4 not logged in/not allowed, 5 gave up waiting. See docs/api.md.")
app.add_typer(stack.app, name="stack")
app.add_typer(users.app, name="users")
app.add_typer(arrivals.app, name="arrivals")
app.add_typer(routes.app, name="routes")
app.add_typer(jobs.plugins_app, name="plugins")
app.command()(demo.demo)
app.command()(deploy.deploy)
app.command()(doctor.doctor)
app.command()(data.login)
app.command()(data.query)
app.command()(data.pull)
app.command()(jobs.run)
app.command()(jobs.status)
app.command()(jobs.retry)
app.command()(jobs.cancel)
app.command()(jobs.results)


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="log debug details")) -> None:
    # Only entry points configure logging; libraries just log.
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


if __name__ == "__main__":
    app()
