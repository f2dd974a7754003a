"""The Batch Processing service: jobs (DAGs of tasks) tracked in PostgreSQL, executed on Dask distributed.

* `workflow`: a workflow file (YAML/JSON) -> validated task specs, the DAG's edges, submit-time errors;
* `store`: the jobs and tasks in the control database: submit, claim (FOR UPDATE SKIP LOCKED, by priority
  class then age, within quotas), finish (outputs, retries with backoff, DAG release), cancel, retry, status;
* `execute`: what a Dask worker runs for one task (dms.tasks.run_task);
* `runner`: the loop that claims tasks in batches, submits them to a Dask cluster and records the outcomes;
* `ocs`: OCS-driven batch: commands over HTTP that start productions, with their acknowledgements.
"""
