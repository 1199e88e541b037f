"""Per-strategy services: each worker builds one set of these for its one strategy.

``workers.factory.build_container`` is the only place that constructs them.
"""
