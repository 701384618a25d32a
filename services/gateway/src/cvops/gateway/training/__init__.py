"""Training: jobs, their generations and trials.

``rules`` (a request checked by the domain, GPU quotas, the domain's cancel), ``projection``
(the ``jobs``, ``job_generations`` and ``job_trials`` tables, filled from the domain's
``evolve``, and their reads), ``service`` (use cases) and ``routes`` (``/jobs``).
"""
