"""The one validation layer: every action's request as a pydantic model (:mod:`.models`),
the shapes of the main answers (:mod:`.answers`), and :func:`parse`, which turns a
model's complaint into the project's :class:`~radcloud.core.errors.BadRequest`."""

from radcloud.api.validation import parse

__all__ = ["parse"]
