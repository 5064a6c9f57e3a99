"""MkDocs hook: publish the committed benchmark reports (benchmarks/reports/<name>/) in the
site under reports/<name>/, so each benchmark page links to the report its figures come from
and `mkdocs build --strict` fails if such a link points at nothing."""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

REPORTS = Path(__file__).resolve().parent.parent / "benchmarks" / "reports"
PUBLISHED = {".md", ".png", ".json"}


def on_files(files, config):
    for path in sorted(REPORTS.glob("*/*")):
        if path.is_file() and path.suffix in PUBLISHED:
            uri = f"reports/{path.parent.name}/{path.name}"
            files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files
