"""From runs to numbers to pages: the names of every reported number (``catalog``), the
papers' numbers with their sources (``papers``), the comparison tables (``compare``), the
notebook runner (``runner``), the HTML pages (``html``), the helpers every notebook calls
(``notebook``) and headless screenshots of a report (``screenshots``).

Nothing under ``stkit.viz`` imports this package: figures take the tables as plain rows.
"""
