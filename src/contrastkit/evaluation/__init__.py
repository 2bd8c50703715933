"""Evaluation of frozen embeddings: kNN, linear probes, retrieval and clustering metrics.

Every function accepts torch tensors or numpy arrays and returns floats or dicts of
floats. scikit-learn is imported only inside the functions that use it.

- ``knn_accuracy``: weighted cosine kNN (Wu et al. 2018, InstDisc).
- ``linear_probe``, ``linear_probe_regression``: logistic regression / ridge.
- ``retrieval_metrics``, ``retrieval_from_embeddings``: recall@k, hit@k, MRR, nDCG@k.
- ``clustering_scores``: k-means NMI and ARI.
- ``sample_episodes``, ``episode_accuracy``: N-way K-shot episodes (BECLR's protocol,
  optionally with OpTA).
- ``rep_n``, ``diversity``, ``repetition_and_diversity``, ``coherence``: generated text
  (SimCTG; Su & Collier, TMLR 2023); ``exact_match``, ``f1``, ``qa_scores``: SQuAD answer
  metrics. MAUVE is not available offline (see ``evaluation.generation``).
- ``sts_scores``, ``evaluate_sts``, ``encode_texts``: STS Spearman / Pearson of cosine,
  Manhattan, Euclidean and dot similarity, as sentence-transformers'
  ``EmbeddingSimilarityEvaluator`` (scipy imported inside).
"""

from contrastkit.evaluation.clustering import clustering_scores
from contrastkit.evaluation.few_shot import episode_accuracy, sample_episodes
from contrastkit.evaluation.generation import (
    coherence,
    diversity,
    exact_match,
    f1,
    normalize_answer,
    qa_scores,
    rep_n,
    repetition_and_diversity,
)
from contrastkit.evaluation.knn import knn_accuracy
from contrastkit.evaluation.linear import linear_probe, linear_probe_regression
from contrastkit.evaluation.rank_variance import mean_rank_variance
from contrastkit.evaluation.retrieval import retrieval_from_embeddings, retrieval_metrics
from contrastkit.evaluation.sts import encode_texts, evaluate_sts, sts_scores

__all__ = [
    "clustering_scores",
    "coherence",
    "diversity",
    "encode_texts",
    "episode_accuracy",
    "evaluate_sts",
    "exact_match",
    "f1",
    "knn_accuracy",
    "linear_probe",
    "linear_probe_regression",
    "mean_rank_variance",
    "normalize_answer",
    "qa_scores",
    "rep_n",
    "repetition_and_diversity",
    "retrieval_from_embeddings",
    "retrieval_metrics",
    "sample_episodes",
    "sts_scores",
]
