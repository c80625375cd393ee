"""Cancelling: the cancel path for one object, bulk cancels of a set, the IDs a task works on."""
