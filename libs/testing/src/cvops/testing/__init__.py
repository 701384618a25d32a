"""Test support for the cvops workspace: development only, never installed in an image.

One submodule per origin: ``core`` (the pytest plugin the root conftest loads),
``client`` and ``client_fakes`` (the CLI's fake gateway), ``gateway``, ``gateway_process``
(the gateway as a child process on a NATS of its own), ``registry``,
``router``, ``trainer``, ``converter``, ``benchmarker``.
"""
