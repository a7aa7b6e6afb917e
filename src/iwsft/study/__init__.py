"""The multi-seed study: plan, queue, report."""
