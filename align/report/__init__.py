"""Safety evaluation reports: ``write_report(run_dir, name)`` writes ``reports/<name>/report.html`` (one
self-contained file: figures embedded, no remote scripts or styles), ``report.json`` (every number in
the page) and ``report.md``.

- ``collect``: the report's data, read from the run's rounds;
- ``plots``: its figures (matplotlib, PNG data URIs);
- ``render``: the HTML and Markdown pages (jinja2).
"""

from align.report.render import write_report

__all__ = ["write_report"]
