"""The optimizer catalogue (FIELDS O04, §6.1): each name the studio offers -> the class that implements it,
and what the rest of the studio must know about it. No torch here: the schema builds its choice list
from these names, the trainer (studio/train/optimizers.py) imports the classes.

Sources: torch.optim; transformers (Adafactor); prodigyopt; lion-pytorch; bitsandbytes (8-bit and paged
states, CUDA only); pytorch-optimizer (CAME, D-Adaptation, SOAP, Adan, AdEMAMix, StableAdamW, Ranger,
ADOPT); schedulefree (the authors' schedule-free AdamW / RAdam / SGD). None is re-implemented here.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Spec:
    target: str  # "module:Class"
    defaults: dict = field(default_factory=dict)
    cuda: bool = False  # bitsandbytes: CUDA kernels only
    lr_free: bool = False  # finds its own step size: learning_rate is a multiplier, 1.0 expected
    schedule_free: bool = False  # needs train()/eval() around sampling and saving, no LR schedule
    # How it applies weight decay when optimizer.decouple_weight_decay is "default" (None: per the
    # class's switch below). Fixed: the class cannot do the other kind.
    decoupled: bool | None = None
    switch: str = ""  # the class's own argument that turns decoupled decay on or off
    # Bytes of optimizer state per trainable number (fp32 moments = 4 each, 8-bit ones = 1 each; factored
    # second moments count as about 0): the memory estimate's figure (studio/config/vram.py).
    state_bytes: float = 8.0

    def load(self) -> type:
        module, name = self.target.split(":")
        return getattr(importlib.import_module(module), name)


PO = "pytorch_optimizer"
BNB = "bitsandbytes.optim"
CATALOGUE: dict[str, Spec] = {
    "adamw": Spec("torch.optim:AdamW", decoupled=True),
    "adam": Spec("torch.optim:Adam", switch="decoupled_weight_decay"),
    "radam": Spec("torch.optim:RAdam", switch="decoupled_weight_decay"),
    "sgd": Spec("torch.optim:SGD", {"momentum": 0.0}, decoupled=False, state_bytes=0),
    "sgd_nesterov": Spec("torch.optim:SGD", {"momentum": 0.9, "nesterov": True}, decoupled=False, state_bytes=4),
    # An explicit LR needs relative_step/scale_parameter off (transformers' documented setting).
    "adafactor": Spec("transformers.optimization:Adafactor",
                      {"scale_parameter": False, "relative_step": False, "warmup_init": False}, decoupled=False,
                      state_bytes=0.1),
    "prodigy": Spec("prodigyopt:Prodigy", lr_free=True, switch="decouple", state_bytes=16),
    "lion": Spec("lion_pytorch:Lion", decoupled=True, state_bytes=4),
    "came": Spec(f"{PO}:CAME", switch="weight_decouple", state_bytes=4.1),
    "dadapt_adam": Spec(f"{PO}:DAdaptAdam", lr_free=True, switch="weight_decouple", state_bytes=12),
    "dadapt_lion": Spec(f"{PO}:DAdaptLion", lr_free=True, decoupled=True, state_bytes=8),
    "dadapt_sgd": Spec(f"{PO}:DAdaptSGD", lr_free=True, switch="weight_decouple", state_bytes=12),
    "dadapt_adagrad": Spec(f"{PO}:DAdaptAdaGrad", lr_free=True, switch="weight_decouple", state_bytes=12),
    "adamw_schedulefree": Spec("schedulefree:AdamWScheduleFree", schedule_free=True, decoupled=True),
    "radam_schedulefree": Spec("schedulefree:RAdamScheduleFree", schedule_free=True, decoupled=True),
    "sgd_schedulefree": Spec("schedulefree:SGDScheduleFree", schedule_free=True, decoupled=False, state_bytes=4),
    "soap": Spec(f"{PO}:SOAP", decoupled=True, state_bytes=16),
    "adan": Spec(f"{PO}:Adan", switch="weight_decouple", state_bytes=16),
    "ademamix": Spec(f"{PO}:AdEMAMix", switch="weight_decouple", state_bytes=12),
    "stableadamw": Spec(f"{PO}:StableAdamW", decoupled=True),
    "ranger": Spec(f"{PO}:Ranger", switch="weight_decouple", state_bytes=12),
    "adopt": Spec(f"{PO}:ADOPT", switch="weight_decouple"),
    "adamw8bit": Spec(f"{BNB}:AdamW8bit", cuda=True, decoupled=True, state_bytes=2),
    "paged_adamw8bit": Spec(f"{BNB}:PagedAdamW8bit", cuda=True, decoupled=True, state_bytes=2),
    "paged_adamw": Spec(f"{BNB}:PagedAdamW", cuda=True, decoupled=True),
    "bnb_adamw": Spec(f"{BNB}:AdamW", cuda=True, decoupled=True),
    "bnb_adam": Spec(f"{BNB}:Adam", cuda=True, decoupled=False),
    "adam8bit": Spec(f"{BNB}:Adam8bit", cuda=True, decoupled=False, state_bytes=2),
    "bnb_adagrad": Spec(f"{BNB}:Adagrad", cuda=True, decoupled=False, state_bytes=4),
    "lion8bit": Spec(f"{BNB}:Lion8bit", cuda=True, decoupled=True, state_bytes=1),
    "paged_lion": Spec(f"{BNB}:PagedLion", cuda=True, decoupled=True, state_bytes=4),
    "paged_lion8bit": Spec(f"{BNB}:PagedLion8bit", cuda=True, decoupled=True, state_bytes=1),
    "sgd_nesterov8bit": Spec(f"{BNB}:SGD8bit", {"momentum": 0.9, "nesterov": True}, cuda=True, decoupled=False, state_bytes=1),
    "adagrad8bit": Spec(f"{BNB}:Adagrad8bit", cuda=True, decoupled=False, state_bytes=1),
    "bnb_ademamix": Spec(f"{BNB}:AdEMAMix", cuda=True, decoupled=True, state_bytes=12),
    "ademamix8bit": Spec(f"{BNB}:AdEMAMix8bit", cuda=True, decoupled=True, state_bytes=3),
    "paged_ademamix": Spec(f"{BNB}:PagedAdEMAMix", cuda=True, decoupled=True, state_bytes=12),
    "paged_ademamix8bit": Spec(f"{BNB}:PagedAdEMAMix8bit", cuda=True, decoupled=True, state_bytes=3),
}


def spec(name: str) -> Spec:
    return CATALOGUE[name]


SCHEDULE_FREE = tuple(n for n, s in CATALOGUE.items() if s.schedule_free)
LR_FREE = tuple(n for n, s in CATALOGUE.items() if s.lr_free)
