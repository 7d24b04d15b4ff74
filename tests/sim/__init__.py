"""Deterministic fault simulation of the real tunnel core (issue 13, item 5).

``adapter`` is the only module that knows the socketeer API; ``net`` (clocks, local TCP),
``broker`` (the simulated broker cluster), ``apps`` (clients and targets), ``world`` (the
processes, the fault schedule, the run) and ``invariants`` (what is checked) build on it.
See docs/simulation.rst.
"""
