"""Text adapter: encoders over local Hugging Face / sentence-transformers folders and
contrastive sentence-embedding methods.

Only torch is imported here; transformers and sentence-transformers load inside
functions/constructors, so ``import contrastkit`` stays light.
"""

from contrastkit.text import (
    contriever,  # noqa: F401  (registers contriever / listwise_graded)
    cse,  # noqa: F401  (registers whitenedcse / debcse / multicsr)
    simcse,  # noqa: F401  (registers simcse_unsup / simcse_sup)
)
from contrastkit.text.data import (
    from_dataset,
    read_examples,
    read_graded,
    read_pairs,
    read_sentences,
    read_triples,
    stsb,
    stsb_sentences,
)
from contrastkit.text.encoder import POOLINGS, TextEncoder, default_model_path
from contrastkit.text.methods import (
    TEXT_METHODS,
    TextMethod,
    create_text_method,
    list_text_methods,
    register_text_method,
    supports_grad_cache,
)
from contrastkit.text.simcse import SimCSESup, SimCSEUnsup, simcse_loss
from contrastkit.text.tasks import (
    RetrievalTask,
    crop_retrieval_task,
    evaluate_retrieval,
    pairs_retrieval_task,
    stsb_retrieval_task,
)
from contrastkit.text.train import (
    TextTrainConfig,
    TextTrainResult,
    encoder_from_checkpoint,
    stsb_spearman,
    train_text,
    train_text_from_dict,
)

__all__ = [
    "POOLINGS",
    "RetrievalTask",
    "TEXT_METHODS",
    "SimCSESup",
    "SimCSEUnsup",
    "TextEncoder",
    "TextMethod",
    "TextTrainConfig",
    "TextTrainResult",
    "create_text_method",
    "crop_retrieval_task",
    "default_model_path",
    "encoder_from_checkpoint",
    "evaluate_retrieval",
    "from_dataset",
    "list_text_methods",
    "pairs_retrieval_task",
    "read_examples",
    "read_graded",
    "read_pairs",
    "read_sentences",
    "read_triples",
    "register_text_method",
    "simcse_loss",
    "supports_grad_cache",
    "stsb",
    "stsb_sentences",
    "stsb_retrieval_task",
    "stsb_spearman",
    "train_text",
    "train_text_from_dict",
]
