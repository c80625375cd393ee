"""The DAGs of ../dags, each run whole with dag.test() against the OpenAI emulator."""


def test_a_failed_step_cancels_the_batch(run_dag, openai_emulator):
    result = run_dag("nightly_batch", fail=True)

    assert result.task_states == {
        "submit_batch": "success",
        "process_results": "failed",
        "cancel_batch": "success",
    }
    batch_id = result.xcom("submit_batch")["id"]
    assert result.xcom("cancel_batch")["status"] == "cancelled"
    assert openai_emulator.get_batch(batch_id)["status"] == "cancelled"
    assert len(openai_emulator.requests(method="POST", path="/v1/batches/*/cancel")) == 1


def test_the_batch_runs_on_when_all_goes_well(run_dag, openai_emulator):
    result = run_dag("nightly_batch")

    assert result.state == "success"
    assert result.task_states["cancel_batch"] == "skipped"
    assert openai_emulator.requests(method="POST", path="/v1/batches/*/cancel") == []
