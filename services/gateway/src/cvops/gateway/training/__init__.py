"""Training: jobs, their generations and trials.

``rules`` (request checks, GPU quotas, cancel), ``projection`` (the ``jobs``,
``job_generations`` and ``job_trials`` tables, their folds and reads), ``service`` (use
cases) and ``routes`` (``/jobs``).
"""
