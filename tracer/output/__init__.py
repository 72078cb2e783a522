"""Output: the report files a person or CI reads (report.json, summary.md, flamegraphs, snapshot diffs) and
the CI gate with its baselines and formats. Everything here reads an analysis or a report dict: no engine."""
