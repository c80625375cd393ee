"""Waiting for a settled status: polling delays, the one wait loop, trigger events, the status board."""
