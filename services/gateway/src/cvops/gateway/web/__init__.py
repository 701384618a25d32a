"""The web UI: server-rendered pages (Jinja) under ``/ui/`` for people, over the same use
cases as the API — sign-in, lists and detail pages of models, data sets, jobs (live over SSE),
conversions, benchmarks and deployments, the report page, and the actions an engineer may take.

``site`` (the app and how it is mounted), ``session`` (cookie sign-in, CSRF), ``render``
(templates, flash messages, failures as pages), ``forms``, ``live`` (SSE parts), ``assets``
(HTMX from npm), and the pages: ``account``, ``catalog``, ``work``.
"""

from cvops.gateway.web.site import WEB_PATH, create_web_app, with_web_ui

__all__ = ["WEB_PATH", "create_web_app", "with_web_ui"]
