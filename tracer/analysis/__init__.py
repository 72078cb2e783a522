"""Analysis: pure functions from a capture on disk to classified, attributed findings (runs offline anywhere).

stacks (frames, owner frame, fingerprints) -> host / gpu (surviving allocations of each stream) -> findings ->
components (which vLLM part) -> verdicts (leak, cache, transient) -> counters and unattributed growth.
`analyze.analyze(capture)` runs them all.
"""
