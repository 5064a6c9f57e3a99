"""The evaluation harness: leave-one-domain-out zero-shot adaptation, metrics and report."""
