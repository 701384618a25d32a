"""Identity: users, roles, passwords, tokens and sign-in.

``rules`` (decisions), ``projection`` (the ``users`` and ``tokens`` tables, their fold and
reads), ``service`` (use cases, the first admin), ``throttle`` (failed sign-ins per username
and per address) and ``routes`` (``/auth``, ``/users``).
"""
