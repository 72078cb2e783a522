"""Recording: the round driver runs a workload under tracing backends, with probes after every round, and writes
the capture. `session` is the traced child process of `tracer diff`, `child` starts it; `holders` searches,
inside the traced process, who keeps a leak alive; `screen` decides from counters whether to trace at all.
"""
