"""cvops-reporter: one report per model version — its data set, GA search, conversions,
benchmarks, recommendation and deployment, with charts — rebuilt from the log whenever a
result of that version arrives, stored as artifacts and announced by ``report.generated``.

Public pieces: ``cvops.reporter.projection`` (the SQLite view and ``db_path``),
``cvops.reporter.content`` (inputs → sections, tables, data; pure),
``cvops.reporter.render`` (HTML, PNG, PDF, JSON), ``cvops.reporter.app.main`` (the service),
``python -m cvops.reporter``.
"""
