"""codeassist.training: collect a user's repositories, build shards, fine-tune (one process,
DDP or FSDP under torchrun), and gate the result against the model in use.

Entry points load on first use (model/exports.py).
"""

from typing import TYPE_CHECKING

from codeassist.model.exports import lazy_exports

if TYPE_CHECKING:
    from codeassist.training.collect import CollectResult
    from codeassist.training.finetune import run_finetune
    from codeassist.training.finetune_setup import FinetuneOptions, TrainError
    from codeassist.training.loop import TrainConfig, train

# `collect` itself is codeassist.training.collect.collect (the name is its module's)
__all__ = ["CollectResult", "FinetuneOptions", "TrainConfig", "TrainError", "run_finetune", "train"]

__getattr__ = lazy_exports(__name__, __file__)
