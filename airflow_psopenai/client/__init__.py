"""The HTTP client under the hook: connection settings, retries, errors, the shared connection pool, redaction."""
