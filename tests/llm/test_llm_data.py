"""Chat and pretraining data: formats, assistant-only labels, truncation, packing, broken lines."""
from __future__ import annotations

import pytest
import torch

from studio.data.chat import (IGNORE_INDEX, DataError, build_chat_dataset, collate_causal, load_conversations,
                              tokenize_conversation)
from studio.data.text_corpus import build_text_dataset, pack_documents
from tests.llm.conftest import TINY_PRESET, llm_config, write_jsonl

CONVERSATION = [
    {"role": "system", "content": "You are a terse helper."},
    {"role": "user", "content": "What colour is the sky?"},
    {"role": "assistant", "content": "Blue."},
    {"role": "user", "content": "And grass?"},
    {"role": "assistant", "content": "Green, mostly."},
]


def labelled_text(tokenizer, ids, labels) -> list[str]:
    """Decode each run of consecutive labelled tokens."""
    runs, current = [], []
    for tok, lab in zip(ids, labels):
        if lab != IGNORE_INDEX:
            assert lab == tok  # labels are the tokens themselves; the model shifts them
            current.append(tok)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    if current:
        runs.append(tokenizer.decode(current))
    return runs


def test_only_assistant_turns_carry_labels(tokenizer):
    ids, labels, length = tokenize_conversation(tokenizer, CONVERSATION, max_length=512)
    assert length == len(ids)
    # Each assistant turn is labelled with its end-of-turn marker (so the model learns to stop) ...
    assert labelled_text(tokenizer, ids, labels) == ["Blue.<|im_end|>\n", "Green, mostly.<|im_end|>\n"]
    # ... and nothing of the system prompt, the user turns or the role headers is.
    masked = tokenizer.decode([t for t, lab in zip(ids, labels) if lab == IGNORE_INDEX])
    for text in ("You are a terse helper.", "What colour is the sky?", "And grass?", "<|im_start|>assistant"):
        assert text in masked


def test_the_loss_ignores_user_and_system_tokens(tiny_llm, tokenizer):
    """The model's loss equals the cross-entropy over assistant targets alone, and it does not move when
    the labels of the prompt positions are what the collator makes them (-100) versus dropped entirely."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_llm), dtype=torch.float32).eval()
    ids, labels, _ = tokenize_conversation(tokenizer, CONVERSATION, max_length=512)
    batch = collate_causal([{"input_ids": ids, "labels": labels}], tokenizer.pad_token_id)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        model_loss = model(**batch).loss
    targets = torch.tensor(ids[1:])
    per_token = torch.nn.functional.cross_entropy(logits[0, :-1], targets, reduction="none")
    assistant = torch.tensor([lab != IGNORE_INDEX for lab in labels[1:]])
    assert 0 < int(assistant.sum()) < len(ids) // 2
    torch.testing.assert_close(model_loss, per_token[assistant].mean())
    assert not torch.isclose(model_loss, per_token.mean())  # the prompt tokens would change it


def test_alpaca_and_sharegpt_read_like_messages(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "mixed.jsonl", [
        {"messages": [{"role": "user", "content": "Say hi.\n\nPlease"}, {"role": "assistant", "content": "Hi!"}]},
        {"instruction": "Say hi.", "input": "Please", "output": "Hi!"},
        {"conversations": [{"from": "human", "value": "Say hi.\n\nPlease"}, {"from": "gpt", "value": "Hi!"}]},
    ])
    first, alpaca, sharegpt = load_conversations(path, "data.path")
    assert first == alpaca == sharegpt
    assert tokenize_conversation(tokenizer, alpaca, 512) == tokenize_conversation(tokenizer, first, 512)


def test_broken_lines_are_named_with_their_numbers(tmp_path):
    good = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    path = write_jsonl(tmp_path / "broken.jsonl", [
        good, '{"messages": [{"role": "user", "content": "x"}', good,
        {"messages": [{"role": "user", "content": "only a question"}]},
        {"prompt": "unknown shape"},
    ])
    with pytest.raises(DataError) as err:
        load_conversations(path, "data.path")
    message = str(err.value)
    assert "data.path" in message and "broken.jsonl" in message and "malformed" in message
    assert "line 2: not valid JSON" in message
    cfg = llm_config([f"data.path={path}"])
    with pytest.raises(DataError, match="line 2"):
        build_chat_dataset(cfg, None, "train")  # fails before any tokenizing


def test_shape_errors_name_the_line_and_the_problem(tmp_path):
    good = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    path = write_jsonl(tmp_path / "shapes.jsonl", [
        good, {"messages": [{"role": "user", "content": "only a question"}]},
        {"prompt": "unknown shape"}, {"messages": [{"role": "robot", "content": "beep"}]},
    ])
    with pytest.raises(DataError) as err:
        load_conversations(path, "data.path")
    message = str(err.value)
    assert "3 malformed line(s)" in message
    assert "line 2: no assistant turn" in message
    assert "line 3: expected `messages`" in message
    assert "line 4: unknown role 'robot'" in message


def test_eval_split_max_samples_and_truncation_report(tmp_path, tokenizer):
    records = [{"messages": [{"role": "user", "content": f"Question {i}?"},
                             {"role": "assistant", "content": "An answer. " * (40 if i == 0 else 1)}]}
               for i in range(20)]
    path = write_jsonl(tmp_path / "chat.jsonl", records)
    base = [f"data.path={path}", "data.max_seq_length=128", "data.eval_split_ratio=0.25"]
    train = build_chat_dataset(llm_config(base), tokenizer, "train")
    held = build_chat_dataset(llm_config(base), tokenizer, "eval")
    assert (len(train), len(held)) == (15, 5)
    assert not {tuple(x["input_ids"]) for x in train.examples} & {tuple(x["input_ids"]) for x in held.examples}
    assert all(len(x["input_ids"]) <= 128 for x in train.examples + held.examples)
    truncated = train if train.truncated else held  # the long conversation landed in one of them
    assert truncated.truncated == 1 and "longer than data.max_seq_length=128" in truncated.report
    capped = build_chat_dataset(llm_config(base + ["data.max_samples=4"]), tokenizer, "train")
    assert len(capped) == 4
    assert train[(3, 7)] == train[3]  # the trainer's EpochSampler hands (index, epoch) keys


def test_pretraining_text_is_packed_into_blocks(tmp_path, tokenizer):
    blocks = pack_documents([[1, 2, 3], [4, 5], [6]], block=3, separator=0)
    assert blocks == [[1, 2, 3], [0, 4, 5], [0, 6, 0]]
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(6):
        (folder / f"doc{i}.txt").write_text(f"Document {i}. " + "The quick brown fox jumps. " * 30)
    write_jsonl(folder / "more.jsonl", [{"text": "A short line of text."}, {"text": "Another one."}])
    over = ["model.variant=pretrain", f"data.path={folder}", "data.max_seq_length=128",
            "data.eval_split_ratio=0.25"]
    train = build_text_dataset(llm_config(over), tokenizer, "train")
    held = build_text_dataset(llm_config(over), tokenizer, "eval")
    assert len(train) > 2 and len(held) >= 1
    lengths = [len(x["input_ids"]) for x in train.examples]
    assert all(n == 128 for n in lengths[:-1]) and lengths[-1] <= 128
    assert all(x["labels"] == x["input_ids"] for x in train.examples)
    # 8 documents (6 files + 2 JSONL lines), 2 held out whole; each ends with one eos separator.
    assert "train data: 6 document(s)" in train.report and "eval data: 2 document(s)" in held.report
    assert sum(x["input_ids"].count(tokenizer.eos_token_id) for x in train.examples) == 6


def test_pretraining_jsonl_needs_a_text_field(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "corpus.jsonl", [{"text": "fine"}, {"content": "wrong key"}])
    with pytest.raises(DataError, match="line 2: expected a string `text` field"):
        build_text_dataset(llm_config(["model.variant=pretrain", f"data.path={path}"]), tokenizer, "train")


def test_shipped_demo_chat_data_is_valid(tokenizer):
    cfg = llm_config([])
    assert cfg.model.family == "causal_lm" and cfg.data.path.endswith("tiny-chat.jsonl")
    conversations = load_conversations(TINY_PRESET.parent / "data" / "tiny-chat.jsonl", "data.path")
    assert len(conversations) >= 30
    train = build_chat_dataset(cfg, tokenizer, "train")
    assert len(train) + len(build_chat_dataset(cfg, tokenizer, "eval")) == len(conversations)
