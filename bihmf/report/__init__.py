"""The report stage: finished runs -> per-dataset tables, statistics, figures, and the summary
beside the published numbers.

``aggregate`` (seeds combined into one table model), ``format`` (that model as Markdown, LaTeX,
HTML), ``stats`` (Bi-HMF vs the best baseline: paired t-test or paired bootstrap), ``costs``
(per-run provenance and cost), ``plots`` (figures), ``paper`` (published numbers, summary
table), ``build`` (writes a report's files; what the workflow scripts call). Runs are read
through :mod:`bihmf.run`.
"""
