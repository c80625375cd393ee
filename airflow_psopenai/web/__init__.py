"""The OpenAI page: a FastAPI app on Airflow's API server (``/psopenai``) that lists the account's batches with
the DAG run that launched each, and cancels them for the users Airflow's auth manager allows.

The top layer: it uses the callbacks' run cleanup and the cancel path. The plugin names it by its path
(``airflow_psopenai.web.app:create_app``), so loading the plugin imports neither FastAPI nor this package.
"""
