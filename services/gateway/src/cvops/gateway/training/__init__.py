"""Training: jobs, their generations and trials.

``rules`` (a request checked by the domain, GPU quotas, the domain's cancel), ``projection``
(the ``jobs`` and ``job_trials`` tables, declared once in ``cvops.core.jobs`` and filled
from the domain's ``evolve``; generations are read from each job's state), ``service`` (use
cases) and ``routes`` (``/jobs``).
"""
