"""End-to-end causal LM runs on the tiny Llama-style model (in-process, offline, CPU): SFT with an eval
split, the PEFT adapter and the merged folder loaded back by their ecosystem loaders, early stopping,
pretraining on text."""
from __future__ import annotations

import json
import math

import pytest
import torch

from tests.conftest import read_progress
from tests.llm.conftest import train_in_process, write_jsonl

pytestmark = pytest.mark.slow
PROBE = "<|im_start|>user\nWhat colour is the sky?<|im_end|>\n<|im_start|>assistant\n"


def events(records: list[dict], name: str) -> list[dict]:
    return [r for r in records if r.get("event") == name]


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory, tiny_llm):
    run_dir = tmp_path_factory.mktemp("llm-sft") / "run"
    records = train_in_process(run_dir, [
        "training.max_steps=16", "evaluation.steps=8", "checkpointing.save_steps=8", "sampling.every_steps=0",
        'sampling.prompts=[{"prompt": "What colour is the sky?", "seed": 3}]', "sampling.max_new_tokens=8",
        "adapter.merge_after_training=true", "memory.gradient_checkpointing=true"])
    return run_dir, records


def test_sft_writes_eval_loss_and_perplexity(sft_run):
    run_dir, records = sft_run
    evals = events(records, "eval")
    assert [e["step"] for e in evals] == [8, 16]
    for e in evals:
        assert math.isclose(e["perplexity"], math.exp(e["eval_loss"]), rel_tol=1e-3)
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"] + 0.05  # learning, not diverging
    steps = [r for r in records if "loss" in r and "step" in r]
    assert steps[-1]["step"] == 16 and records[-1]["event"] == "done"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(run_dir / "runs"))
    board.Reload()
    assert {"eval/eval_loss", "eval/perplexity", "train/loss"} <= set(board.Tags()["scalars"])


def test_sft_samples_are_chat_completions(sft_run):
    run_dir, records = sft_run
    samples = events(records, "sample")
    assert samples and samples[-1]["prompt"] == "What colour is the sky?"
    text_file = run_dir / "samples" / samples[-1]["path"].rsplit("/", 1)[-1]
    meta = json.loads(text_file.with_suffix(".json").read_text())
    assert text_file.suffix == ".txt" and meta["chat_template"] is True
    assert meta["seed"] == 3 and 0 < meta["new_tokens"] <= 8 and meta["step"] == 16


def test_peft_loads_the_adapter_and_the_logits_change(sft_run, tiny_llm):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir, _ = sft_run
    config = json.loads((run_dir / "adapter_config.json").read_text())
    assert config["task_type"] == "CAUSAL_LM" and config["peft_type"] == "LORA"
    assert set(config["target_modules"]) >= {"q_proj", "v_proj", "down_proj"}
    tokenizer = AutoTokenizer.from_pretrained(str(run_dir))  # saved beside the adapter, template included
    assert tokenizer.chat_template
    ids = tokenizer(PROBE, return_tensors="pt", add_special_tokens=False)["input_ids"]
    base = AutoModelForCausalLM.from_pretrained(str(tiny_llm), dtype=torch.float32).eval()
    with torch.no_grad():
        before = base(ids).logits
        adapted = PeftModel.from_pretrained(base, str(run_dir)).eval()
        after = adapted(ids).logits
    assert torch.isfinite(after).all()
    assert (after - before).abs().max() > 1e-3

    merged = AutoModelForCausalLM.from_pretrained(str(run_dir / "merged"), dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, after, rtol=1e-4, atol=1e-4)
    saved = {r["format"]: r for r in events(read_progress(run_dir), "saved")}
    assert saved["peft"]["verified"] is True and saved["merged"]["verified"] is True


def test_early_stopping_stops_a_plateau_and_keeps_the_best_checkpoint(tmp_path, tiny_llm):
    # Eval every step; with a threshold of 1.0 nothing after the first evaluation counts as an
    # improvement, i.e. the eval loss has plateaued from step 1 on.
    run_dir = tmp_path / "run"
    records = train_in_process(run_dir, [
        "training.max_steps=30", "evaluation.steps=1", "evaluation.early_stopping_patience=2",
        "evaluation.early_stopping_threshold=1.0", "checkpointing.save_strategy=no",
        "checkpointing.max_checkpoints=1", "sampling.prompts=[]", "adapter.verify_exports=false"])
    evals = events(records, "eval")
    assert [e["step"] for e in evals] == [1, 2, 3] and [e["best"] for e in evals] == [True, False, False]
    assert any("early stopping" in w["message"] for w in events(records, "warning"))
    assert records[-1]["event"] == "done" and records[-1]["step"] == 3
    best = json.loads((run_dir / "best_checkpoint.json").read_text())
    assert best["step"] == 1 and math.isclose(best["eval_loss"], evals[0]["eval_loss"], rel_tol=1e-6)
    assert (run_dir / "checkpoint-1" / "manifest.json").is_file()
    assert (run_dir / "checkpoint-1" / "adapter_model.safetensors").is_file()


def test_pretraining_on_text_trains_the_whole_layers(tmp_path, tiny_llm):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(4):
        (corpus / f"story{i}.txt").write_text("Once upon a time a tiny model learned to write. " * 25)
    write_jsonl(corpus / "extra.jsonl", [{"text": "The end of the story."}])
    run_dir = tmp_path / "run"
    records = train_in_process(run_dir, [
        "model.variant=pretrain", f"data.path={corpus}", "data.eval_split_ratio=0.2", "adapter.type=full",
        "adapter.target_modules=[]", "training.learning_rate=0.001", "training.max_steps=6",
        "evaluation.steps=3", "checkpointing.save_strategy=no", 'sampling.prompts=["Once upon"]',
        "sampling.max_new_tokens=6", "adapter.verify_exports=false"])
    losses = [r["loss"] for r in records if "loss" in r and "step" in r]
    evals = events(records, "eval")
    assert len(evals) == 2 and evals[1]["eval_loss"] < evals[0]["eval_loss"]
    assert losses[-1] < losses[0]
    args = json.loads((run_dir / "training_args.json").read_text())
    assert args["config"]["model"]["variant"] == "pretrain" and args["dataset_items"] >= 2
    assert (run_dir / "adapter_model.safetensors").is_file()
    assert events(records, "sample")[-1]["prompt"] == "Once upon"
