"""Take an API key out of text that a server, a proxy or a transport error produced.

A proxy's error page may quote the ``Authorization`` header escaped (HTML, JSON, URL encoding),
base64-encoded (the key, or ``Bearer <key>``) or cut short; Airflow's secrets masker only knows the
key as it is. Any run of at least ``MIN_SECRET_RUN`` characters of the key, in any of those forms, is
replaced by ``***``.
"""

from __future__ import annotations

import base64
import html
import json
import re
from urllib.parse import quote, quote_plus

MIN_SECRET_RUN = 8
REDACTED = "***"


def _base64_forms(secret: str) -> set[str]:
    """Return ``secret`` in base64 (standard and URL-safe) as it reads inside any longer encoded text.

    Base64 turns 3 bytes into 4 characters, so how the key's bytes read depends on where they start
    (``Bearer <key>`` shifts them by 7): each of the three starts, without the characters that also
    hold the bytes before.
    """
    forms = set()
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + secret.encode())
        # A character holding a byte before the key, and the last one or two (they hold the bytes after), vary.
        body = encoded[(shift * 4 + 2) // 3 :].rstrip(b"=")[:-1].decode("ascii")
        forms |= {body, body.replace("+", "-").replace("/", "_")}
    return forms


def _encodings(secret: str) -> set[str]:
    """Return the forms in which a proxy or a library may quote ``secret``."""
    specials = {char: f"&#{ord(char)};" for char in secret if not char.isalnum()}
    return _base64_forms(secret) | {
        secret,
        quote(secret, safe=""),
        quote_plus(secret),
        json.dumps(secret)[1:-1],
        html.escape(secret),
        html.escape(secret, quote=False),
        "".join(specials.get(char, char) for char in secret),
        secret.encode("unicode_escape").decode("ascii"),
    }


class Redactor:
    """Replace every run of ``MIN_SECRET_RUN`` or more characters of one secret, in any encoding, by ``***``.

    :param secret: The key; an empty one redacts nothing.
    """

    def __init__(self, secret: str) -> None:
        self._grams = {
            form[start : start + MIN_SECRET_RUN]
            for form in _encodings(secret)
            for start in range(len(form) - MIN_SECRET_RUN + 1)
        }

    def __call__(self, text: str) -> str:
        """Return ``text`` with every part of the secret replaced."""
        if not self._grams or len(text) < MIN_SECRET_RUN:
            return text
        secret = bytearray(len(text))
        for start in range(len(text) - MIN_SECRET_RUN + 1):
            if text[start : start + MIN_SECRET_RUN] in self._grams:
                secret[start : start + MIN_SECRET_RUN] = b"\x01" * MIN_SECRET_RUN
        parts, kept_from = [], 0
        for run in re.finditer(rb"\x01+", bytes(secret)):
            parts += [text[kept_from : run.start()], REDACTED]
            kept_from = run.end()
        return "".join(parts) + text[kept_from:] if parts else text
