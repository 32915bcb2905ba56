"""Training on what a continuous run mines: the online trainer that closes the loop with ``streammine serve``."""
from .online import (
    Example,
    OnlineTrainerConfig,
    load_texts,
    pack_batches,
    train_online,
    training_examples,
)

__all__ = ["Example", "OnlineTrainerConfig", "load_texts", "pack_batches", "train_online", "training_examples"]
