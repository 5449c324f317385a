"""data.packing: padding-free batches give the padded batch's loss, and packed examples never see each other."""
from __future__ import annotations

import pytest
import torch

from studio.data.chat import IGNORE_INDEX, tokenize_conversation
from tests.llm.conftest import llm_config

CHATS = [
    [{"role": "user", "content": "What colour is the sky?"}, {"role": "assistant", "content": "Blue."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a large animal that lives "
     "in the sea and breathes air."}, {"role": "assistant", "content": "A blue whale, the largest animal known."}],
    [{"role": "user", "content": "Two plus two?"}, {"role": "assistant", "content": "Four."}],
]


def family(packing: bool):
    from studio.families.base import build_family

    fam = build_family(llm_config([f"data.packing={str(packing).lower()}"]), torch.device("cpu"), torch.float32)
    fam.load()
    fam.model.eval()
    return fam


def items(fam, chats=CHATS) -> list[dict]:
    out = []
    for chat in chats:
        ids, labels, _ = tokenize_conversation(fam.tokenizer, chat, max_length=256)
        out.append({"input_ids": ids, "labels": labels})
    return out


def test_packed_batch_has_the_padded_batch_loss_and_per_example_logits(tiny_llm):
    padded_fam, packed_fam = family(False), family(True)
    examples = items(packed_fam)
    padded, packed = padded_fam.collate(examples), packed_fam.collate(examples)
    lengths = [len(e["input_ids"]) for e in examples]
    # One row, no padding, positions restarting at every example, no label on an example's first token.
    assert packed["input_ids"].shape == (1, sum(lengths)) and "attention_mask" not in packed
    starts = torch.tensor([0, *lengths[:-1]]).cumsum(0)
    assert packed["position_ids"][0, starts].tolist() == [0] * len(examples)
    assert (packed["labels"][0, starts] == IGNORE_INDEX).all()
    assert padded["input_ids"].shape == (len(examples), max(lengths))
    with torch.no_grad():
        loss_padded = padded_fam.loss(padded, torch.Generator())
        loss_packed = packed_fam.loss(packed, torch.Generator())
        packed_logits = packed_fam.model(input_ids=packed["input_ids"], position_ids=packed["position_ids"]).logits
        for i, n in enumerate(lengths):  # each example alone, unpadded
            alone = packed_fam.model(input_ids=torch.tensor([examples[i]["input_ids"]])).logits[0]
            torch.testing.assert_close(packed_logits[0, starts[i]:starts[i] + n], alone, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(loss_packed, loss_padded, rtol=1e-5, atol=1e-5)


def test_a_packed_example_does_not_attend_to_the_one_before(tiny_llm):
    fam = family(True)
    changed = [[{"role": "user", "content": "Something else entirely, and much longer than before."},
                {"role": "assistant", "content": "Indeed."}], *CHATS[1:]]
    a, b = fam.collate(items(fam)), fam.collate(items(fam, changed))
    first_a, first_b = len(items(fam)[0]["input_ids"]), len(items(fam, changed)[0]["input_ids"])
    second = len(items(fam)[1]["input_ids"])
    with torch.no_grad():
        logits_a = fam.model(input_ids=a["input_ids"], position_ids=a["position_ids"]).logits[0]
        logits_b = fam.model(input_ids=b["input_ids"], position_ids=b["position_ids"]).logits[0]
    torch.testing.assert_close(logits_a[first_a:first_a + second], logits_b[first_b:first_b + second],
                               rtol=1e-5, atol=1e-5)
    # The first examples differ, so without the packed mask the second's logits would move.
    assert not torch.allclose(logits_a[:first_a].mean(0), logits_b[:first_b].mean(0))


def test_a_packed_run_trains_and_evaluates(tmp_path, tiny_llm):
    from tests.llm.conftest import train_in_process

    records = train_in_process(tmp_path / "run", ["data.packing=true", "training.max_steps=4",
                                                  "evaluation.steps=4", "sampling.every_steps=0",
                                                  "checkpointing.save_strategy=no"])
    losses = [r["loss"] for r in records if "event" not in r and "loss" in r]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    assert [r for r in records if r.get("event") == "eval"]


def test_eval_loss_is_the_token_mean_padded_or_packed(tiny_llm):
    """The eval loss over a split is the mean over its labelled tokens: padded batches of 2 + 1 items and
    the same items packed give one value (before, a packed row counted as one item)."""
    from types import SimpleNamespace

    from accelerate import Accelerator

    from studio.train.evaluate import evaluate

    means = {}
    for packing in (False, True):
        fam = family(packing)
        examples = items(fam)
        loader = [fam.collate(examples[:2]), fam.collate(examples[2:])]
        t = SimpleNamespace(family=fam, cfg=fam.cfg, eval_loader=loader, accelerator=Accelerator(cpu=True))
        means[packing] = evaluate(t)["eval_loss"]
        with torch.no_grad():  # the token mean, computed from each example alone
            losses = [fam.loss(fam.collate([e]), torch.Generator()) for e in examples]
        tokens = [fam.loss_weight(fam.collate([e])) for e in examples]
        expected = sum(float(v) * n for v, n in zip(losses, tokens)) / sum(tokens)
        assert means[packing] == pytest.approx(expected, rel=1e-5)
    assert means[True] == pytest.approx(means[False], rel=1e-5)
