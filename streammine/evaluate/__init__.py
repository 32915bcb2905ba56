"""``streammine eval``: does mining hard negatives help? Fine-tune a copy of a model with the negatives of several
mining configurations and score each on held-out queries (nDCG@10, MRR@10, Recall@100), beside the model before
fine-tuning. See ``runner.py`` for the order of work and ``benchmarks/eval_scifact.yaml`` for an example."""
from .runner import EvalConfig, EvalResult, format_table, load_eval_config, run_eval

__all__ = ["run_eval", "load_eval_config", "EvalConfig", "EvalResult", "format_table"]
