"""What a template rendered to: the text a non-native Jinja template makes of a list, dict or ID.

Standard library only: operators import this at DAG-parse time.
"""

from __future__ import annotations

import ast
import json


def parse_rendered_text(text: str) -> object:
    """Return what a non-native Jinja template rendered to text (JSON or a Python repr), or None."""
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(text)
        except (ValueError, SyntaxError):
            continue
    return None
