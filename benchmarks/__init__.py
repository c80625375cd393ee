"""Benchmarks of airflow-psopenai against the official apache-airflow-providers-openai (``make bench``).

Every figure is measured side by side in the same run, against the bundled OpenAI emulator started as
a separate process (``python -m airflow_psopenai.testing``), so the emulator's CPU and GIL never count
against the measured side.
"""
