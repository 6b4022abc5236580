"""The pure pricing core: charge models, billing periods, proration and rating.

Nothing here does I/O or imports a cloud SDK; inputs are catalog models and plain usage data,
outputs are frozen dataclasses. That keeps billing rules testable in microseconds and lets the
same code rate a live invoice, a dry-run preview and a benchmark.
"""
