"""Pretraining data for causal LMs: plain text packed into `data.max_seq_length` blocks.

Documents: each `.txt` file is one document; each line of a `.jsonl` file is one document (its `text`).
`data.path` may be one such file or a folder of them. Documents are tokenized, joined with the
end-of-sequence token between them and cut into blocks of exactly `max_seq_length` tokens (as
transformers' `run_clm.py` `group_texts`), so no token is truncated away and no padding is wasted;
only the final remainder forms a shorter block. Every token is a label.
"""
from __future__ import annotations

import logging
from pathlib import Path

from studio.data.chat import (DataError, TokenizedDataset, bad_lines_message, file_digest, read_jsonl,
                              resolve_text_path, split_holdout)

log = logging.getLogger("studio.data")
TEXT_SUFFIXES = (".txt", ".jsonl")
MIN_BLOCK = 2  # a causal LM needs at least one (input, next token) pair


def read_documents(path: Path, field: str) -> list[str]:
    """Every non-empty document of a `.txt` / `.jsonl` file or of a folder of them (sorted by name)."""
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in TEXT_SUFFIXES) if path.is_dir() else [path]
    if not files:
        raise DataError(f"{field}: no .txt or .jsonl files in {path}")
    documents: list[str] = []
    for file in files:
        if file.suffix.lower() == ".jsonl":
            documents += _jsonl_texts(file, field)
        elif file.suffix.lower() == ".txt":
            documents.append(file.read_text(encoding="utf-8-sig", errors="replace"))
        else:
            raise DataError(f"{field}: {file.name} is neither .txt nor .jsonl (pretraining reads plain text "
                            "files or JSONL with a `text` field)")
    documents = [doc for doc in documents if doc.strip()]
    if not documents:
        raise DataError(f"{field}: {path} holds no text")
    return documents


def _jsonl_texts(file: Path, field: str) -> list[str]:
    texts, bad = [], []
    for number, record in read_jsonl(file, field):
        if isinstance(record.get("text"), str):
            texts.append(record["text"])
        else:
            bad.append((number, f"expected a string `text` field; found keys {sorted(record)[:6]}"))
    if bad:
        raise DataError(bad_lines_message(file, field, bad))
    return texts


def pack_documents(token_lists: list[list[int]], block: int, separator: int | None) -> list[list[int]]:
    """Concatenate documents (separator token after each) and cut into `block`-long pieces."""
    stream: list[int] = []
    for ids in token_lists:
        stream += ids
        if separator is not None and (not ids or ids[-1] != separator):
            stream.append(separator)
    blocks = [stream[i:i + block] for i in range(0, len(stream), block)]
    return [b for b in blocks if len(b) >= MIN_BLOCK]


def build_text_dataset(cfg, tokenizer, split: str = "train") -> TokenizedDataset:
    """Packed blocks of `split`. The eval share is held out by document when there are several
    documents, otherwise by block (one long text file)."""
    data, block = cfg.data, cfg.data.max_seq_length
    use_eval_file = split == "eval" and data.eval_path
    field = "data.eval_path" if use_eval_file else "data.path"
    path = resolve_text_path(data.eval_path if use_eval_file else data.path, field)
    documents = read_documents(path, field)
    ratio = 0.0 if (use_eval_file or data.eval_path) else data.eval_split_ratio
    by_document = len(documents) > 1
    if by_document:
        train_docs, eval_docs = split_holdout(documents, ratio, cfg.training.seed)
        documents = documents if use_eval_file else (eval_docs if split == "eval" else train_docs)
    token_lists = tokenizer(documents, add_special_tokens=False)["input_ids"] if documents else []
    blocks = pack_documents(token_lists, block, tokenizer.eos_token_id)
    if not by_document and not use_eval_file:
        train_blocks, eval_blocks = split_holdout(blocks, ratio, cfg.training.seed)
        blocks = eval_blocks if split == "eval" else train_blocks
    if split == "train" and data.max_samples > 0:
        blocks = blocks[: data.max_samples]
    if not blocks and split == "train":
        raise DataError(f"{field}: {path.name} gave no training block of text")
    tokens = sum(len(b) for b in blocks)
    report = (f"{split} data: {len(documents)} document(s), {tokens} tokens packed into {len(blocks)} "
              f"block(s) of up to data.max_seq_length={block} tokens (nothing truncated)")
    log.info(report)
    examples = [{"input_ids": b, "labels": list(b)} for b in blocks]
    return TokenizedDataset(examples, file_digest(path, split, block, tokenizer.name_or_path), report)
