"""Evaluation: every arm (base, expert, mixture, merge) scored on the three dimensions by the same code."""
