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

    def load(self) -> type:
        module, name = self.target.split(":")
        return getattr(importlib.import_module(module), name)


PO = "pytorch_optimizer"
BNB = "bitsandbytes.optim"
CATALOGUE: dict[str, Spec] = {
    "adamw": Spec("torch.optim:AdamW", decoupled=True),
    "adam": Spec("torch.optim:Adam", switch="decoupled_weight_decay"),
    "radam": Spec("torch.optim:RAdam", switch="decoupled_weight_decay"),
    "sgd": Spec("torch.optim:SGD", {"momentum": 0.0}, decoupled=False),
    "sgd_nesterov": Spec("torch.optim:SGD", {"momentum": 0.9, "nesterov": True}, decoupled=False),
    # An explicit LR needs relative_step/scale_parameter off (transformers' documented setting).
    "adafactor": Spec("transformers.optimization:Adafactor",
                      {"scale_parameter": False, "relative_step": False, "warmup_init": False}, decoupled=False),
    "prodigy": Spec("prodigyopt:Prodigy", lr_free=True, switch="decouple"),
    "lion": Spec("lion_pytorch:Lion", decoupled=True),
    "came": Spec(f"{PO}:CAME", switch="weight_decouple"),
    "dadapt_adam": Spec(f"{PO}:DAdaptAdam", lr_free=True, switch="weight_decouple"),
    "dadapt_lion": Spec(f"{PO}:DAdaptLion", lr_free=True, decoupled=True),
    "dadapt_sgd": Spec(f"{PO}:DAdaptSGD", lr_free=True, switch="weight_decouple"),
    "dadapt_adagrad": Spec(f"{PO}:DAdaptAdaGrad", lr_free=True, switch="weight_decouple"),
    "adamw_schedulefree": Spec("schedulefree:AdamWScheduleFree", schedule_free=True, decoupled=True),
    "radam_schedulefree": Spec("schedulefree:RAdamScheduleFree", schedule_free=True, decoupled=True),
    "sgd_schedulefree": Spec("schedulefree:SGDScheduleFree", schedule_free=True, decoupled=False),
    "soap": Spec(f"{PO}:SOAP", decoupled=True),
    "adan": Spec(f"{PO}:Adan", switch="weight_decouple"),
    "ademamix": Spec(f"{PO}:AdEMAMix", switch="weight_decouple"),
    "stableadamw": Spec(f"{PO}:StableAdamW", decoupled=True),
    "ranger": Spec(f"{PO}:Ranger", switch="weight_decouple"),
    "adopt": Spec(f"{PO}:ADOPT", switch="weight_decouple"),
    "adamw8bit": Spec(f"{BNB}:AdamW8bit", cuda=True, decoupled=True),
    "paged_adamw8bit": Spec(f"{BNB}:PagedAdamW8bit", cuda=True, decoupled=True),
    "paged_adamw": Spec(f"{BNB}:PagedAdamW", cuda=True, decoupled=True),
    "bnb_adamw": Spec(f"{BNB}:AdamW", cuda=True, decoupled=True),
    "bnb_adam": Spec(f"{BNB}:Adam", cuda=True, decoupled=False),
    "adam8bit": Spec(f"{BNB}:Adam8bit", cuda=True, decoupled=False),
    "bnb_adagrad": Spec(f"{BNB}:Adagrad", cuda=True, decoupled=False),
    "lion8bit": Spec(f"{BNB}:Lion8bit", cuda=True, decoupled=True),
    "paged_lion": Spec(f"{BNB}:PagedLion", cuda=True, decoupled=True),
    "paged_lion8bit": Spec(f"{BNB}:PagedLion8bit", cuda=True, decoupled=True),
    "sgd_nesterov8bit": Spec(f"{BNB}:SGD8bit", {"momentum": 0.9, "nesterov": True}, cuda=True, decoupled=False),
    "adagrad8bit": Spec(f"{BNB}:Adagrad8bit", cuda=True, decoupled=False),
    "bnb_ademamix": Spec(f"{BNB}:AdEMAMix", cuda=True, decoupled=True),
    "ademamix8bit": Spec(f"{BNB}:AdEMAMix8bit", cuda=True, decoupled=True),
    "paged_ademamix": Spec(f"{BNB}:PagedAdEMAMix", cuda=True, decoupled=True),
    "paged_ademamix8bit": Spec(f"{BNB}:PagedAdEMAMix8bit", cuda=True, decoupled=True),
}


def spec(name: str) -> Spec:
    return CATALOGUE[name]


SCHEDULE_FREE = tuple(n for n, s in CATALOGUE.items() if s.schedule_free)
LR_FREE = tuple(n for n, s in CATALOGUE.items() if s.lr_free)
