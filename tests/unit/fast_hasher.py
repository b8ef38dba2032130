"""argon2 at its cheapest, for tests that create accounts.

A default argon2 hash costs ~0.1 s of CPU (more on a loaded box) by design;
tests that add users for every case check who may log in, not what a guess
costs, so they pass this to :class:`radcloud.access.users.UserStore`. A hash names its
own parameters, so the actions (default hasher) verify these as they are.
"""

from argon2 import PasswordHasher

FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
