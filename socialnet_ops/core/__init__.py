"""The pure core: models and decisions (environments, canary judgement, retention, ledger,
gitflow rules, migration checks, backup plans). No Prefect, no network, no subprocess."""
