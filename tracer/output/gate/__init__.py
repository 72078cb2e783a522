"""The CI gate: `evaluate` a report against limits and a baseline of accepted findings, then print it in one of
the registered `formats` (text, GitHub, JUnit, Markdown)."""
