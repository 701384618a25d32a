"""Identity: users, roles, passwords, tokens and sign-in.

``rules`` (decisions), ``projection`` (the ``users`` and ``tokens`` tables, their fold and
reads), ``service`` (use cases, the first admin) and ``routes`` (``/auth``, ``/users``).
"""
