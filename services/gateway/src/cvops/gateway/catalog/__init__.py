"""Catalog: models and their versions, data sets, uploads, files and converted engines.

``rules`` (stage changes, upload fields, why a data set is unusable), ``projection`` (tables,
folds and reads), ``service`` (use cases, uploads awaiting the registry's verdict) and
``routes`` (``/models``, ``/datasets``, ``/uploads``).
"""
