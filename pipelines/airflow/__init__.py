"""The pipeline on Airflow: a DAG built from the same task plan as the Kubeflow DAG.

* :mod:`~vrft.pipelines.airflow.dag`: the DAG factory (imports Airflow: the ``airflow`` extra);
* :mod:`~vrft.pipelines.airflow.task`: the entry point every task runs, in a process, a container
  or a pod (imports no Airflow);
* :mod:`~vrft.pipelines.airflow.processes`: how a local-process task runs that entry point (fresh,
  or forked from one fork server under ``airflow dags test``; imports no Airflow);
* :mod:`~vrft.pipelines.airflow.local`: ``vrft airflow dag`` and ``vrft airflow test``.

Nothing outside this package imports Airflow (an import-linter contract in ``make lint``).
"""
