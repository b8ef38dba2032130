"""Entry point of the ``radcloud`` command; sub-commands live in sibling modules."""

from __future__ import annotations

import logging

import typer

from radcloud.cli import stack, users

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="radcloud: PACS query/retrieve and image plugins as OpenWhisk actions.")
app.add_typer(stack.app, name="stack")
app.add_typer(users.app, name="users")


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="log debug details")) -> None:
    # Only entry points configure logging; libraries just log.
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


if __name__ == "__main__":
    app()
