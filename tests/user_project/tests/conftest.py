pytest_plugins = ["airflow_psopenai.testing.pytest_plugin"]
