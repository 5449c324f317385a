"""Chat (SFT) data for causal LMs: JSONL conversations -> token ids with assistant-only labels.

Accepted record shapes, one JSON object per line:
  {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}      (OpenAI / HF chat)
  {"conversations": [{"from": "system"|"human"|"gpt", "value": "..."}, ...]}         (ShareGPT)
  {"instruction": "...", "input": "...", "output": "...", "system": "..."}             (Alpaca; input/system optional)

The conversation is rendered with the tokenizer's chat template; only the tokens of assistant turns
(their content and the end-of-turn marker the template writes after it) get labels, every other token
gets -100 so the loss ignores system and user text (as TRL's `assistant_only_loss`).
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch

from studio.data.dataset import TrainingData

log = logging.getLogger("studio.data")

IGNORE_INDEX = -100  # label value PyTorch's cross-entropy (and transformers' LM loss) skip
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant",
                  "assistant": "assistant", "bot": "assistant", "model": "assistant"}
ROLES = ("system", "user", "assistant")
MAX_LISTED = 10  # bad lines named in one error message


class DataError(ValueError):
    """A dataset problem the user must fix; the message names the file and the lines."""


# ---- reading ---------------------------------------------------------------------------------------
def resolve_text_path(path: str, field: str) -> Path:
    """A data file or folder; relative paths that do not exist here are tried from the repo root, so
    the shipped presets (`presets/data/...`) work from any folder."""
    from studio.paths import repo_root

    local = Path(path).expanduser()
    if not local.exists() and not local.is_absolute() and (repo_root() / local).exists():
        local = repo_root() / local
    if not local.exists():
        raise DataError(f"{field}: not found: {path}")
    return local.resolve()


def read_jsonl(path: Path, field: str) -> list[tuple[int, dict]]:
    """(line number, object) for every non-blank line; every malformed line is named at once."""
    records, bad = [], []
    with open(path, encoding="utf-8-sig") as fh:  # -sig: tolerate a BOM written by Windows editors
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                bad.append((number, f"not valid JSON ({err.msg} at column {err.colno})"))
                continue
            if not isinstance(obj, dict):
                bad.append((number, f"expected a JSON object, got {type(obj).__name__}"))
                continue
            records.append((number, obj))
    if bad:
        raise DataError(bad_lines_message(path, field, bad))
    return records


def bad_lines_message(path: Path, field: str, bad: list[tuple[int, str]]) -> str:
    listing = "\n".join(f"  line {n}: {reason}" for n, reason in bad[:MAX_LISTED])
    more = f"\n  ... and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
    return f"{field}: {path.name} has {len(bad)} malformed line(s):\n{listing}{more}"


def to_messages(record: dict) -> list[dict]:
    """One record of any accepted shape -> [{"role", "content"}]; ValueError says what is wrong."""
    if "messages" in record:
        turns = record["messages"]
        if not isinstance(turns, list):
            raise ValueError("`messages` must be a list of {role, content} objects")
        messages = [_turn(t, "role", "content", {r: r for r in ROLES}) for t in turns]
    elif "conversations" in record:
        turns = record["conversations"]
        if not isinstance(turns, list):
            raise ValueError("`conversations` must be a list of {from, value} objects")
        messages = [_turn(t, "from", "value", SHAREGPT_ROLES) for t in turns]
    elif "instruction" in record and "output" in record:
        prompt = str(record["instruction"])
        if record.get("input"):
            prompt += "\n\n" + str(record["input"])
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": str(record["output"])}]
        if record.get("system"):
            messages.insert(0, {"role": "system", "content": str(record["system"])})
    else:
        raise ValueError("expected `messages` (chat), `conversations` (ShareGPT) or `instruction` + `output` "
                         f"(Alpaca); found keys {sorted(record)[:6]}")
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError("no assistant turn: nothing to learn from this conversation")
    first = next(m["role"] for m in messages if m["role"] != "system")
    if first == "assistant":
        raise ValueError("the conversation starts with the assistant; it must start with a user turn")
    return messages


def _turn(turn, role_key: str, text_key: str, roles: dict) -> dict:
    if not isinstance(turn, dict) or role_key not in turn or text_key not in turn:
        raise ValueError(f"every turn needs `{role_key}` and `{text_key}`")
    role = str(turn[role_key]).lower()
    if role not in roles:
        raise ValueError(f"unknown {role_key} {turn[role_key]!r}; allowed: {', '.join(sorted(roles))}")
    if not isinstance(turn[text_key], str):
        raise ValueError(f"`{text_key}` must be a string")
    return {"role": roles[role], "content": turn[text_key]}


def load_conversations(path: Path, field: str) -> list[list[dict]]:
    conversations, bad = [], []
    for number, record in read_jsonl(path, field):
        try:
            conversations.append(to_messages(record))
        except ValueError as err:
            bad.append((number, str(err)))
    if bad:
        raise DataError(bad_lines_message(path, field, bad))
    return conversations


# ---- tokenizing ------------------------------------------------------------------------------------
def render_with_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans [start, end) of each assistant turn.

    A turn's span runs from the end of the generation prompt before it to the end of the turn, so it
    covers the content and the end-of-turn marker (the model must learn to stop)."""
    def render(msgs, prompt=False) -> str:
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=prompt)

    full = render(messages)
    spans, cursor = [], 0
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before, upto = render(messages[:i], prompt=True), render(messages[: i + 1])
        if full.startswith(upto) and upto.startswith(before) and len(before) >= cursor:
            spans.append((len(before), len(upto)))
        else:  # templates that rewrite earlier turns: find the content itself
            start = full.find(message["content"], cursor)
            if start < 0:
                raise ValueError("the chat template does not reproduce the assistant text verbatim")
            end = start + len(message["content"])
            eos = tokenizer.eos_token or ""
            if eos and full.startswith(eos, end):
                end += len(eos)
            spans.append((start, end))
        cursor = spans[-1][1]
    return full, spans


def tokenize_conversation(tokenizer, messages: list[dict], max_length: int) -> tuple[list[int], list[int], int]:
    """-> (input_ids, labels, untruncated length); labels are -100 outside assistant spans."""
    text, spans = render_with_spans(tokenizer, messages)
    if tokenizer.is_fast:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        inside = [any(s < span_end and e > span_start for span_start, span_end in spans)
                  for s, e in enc["offset_mapping"]]
    else:  # slow tokenizers have no offsets: tokenize the pieces between span borders one by one
        ids, inside, pos = [], [], 0
        for start, end in [*spans, (len(text), len(text))]:
            for piece, flag in ((text[pos:start], False), (text[start:end], True)):
                piece_ids = tokenizer(piece, add_special_tokens=False)["input_ids"] if piece else []
                ids += piece_ids
                inside += [flag] * len(piece_ids)
            pos = end
    labels = [tok if flag else IGNORE_INDEX for tok, flag in zip(ids, inside)]
    return ids[:max_length], labels[:max_length], len(ids)


# ---- datasets -------------------------------------------------------------------------------------
class TokenizedDataset(TrainingData):
    """Pre-tokenized causal LM examples: [{"input_ids": [...], "labels": [...]}]."""

    def __init__(self, examples: list[dict], fingerprint: str, report: str = "", truncated: int = 0):
        self.examples, self._fingerprint = examples, fingerprint
        self.report, self.truncated = report, truncated  # what building it did; items cut short

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, key) -> dict:
        index = key[0] if isinstance(key, tuple) else key  # EpochSampler yields (index, epoch)
        return self.examples[index]

    def fingerprint(self) -> str:
        return self._fingerprint


def collate_causal(items: list[dict], pad_id: int) -> dict:
    """Right-pad to the longest item: input_ids / attention_mask / labels, each (B, T)."""
    longest = max(len(it["input_ids"]) for it in items)
    ids = torch.full((len(items), longest), pad_id, dtype=torch.long)
    labels = torch.full((len(items), longest), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(items), longest), dtype=torch.long)
    for row, it in enumerate(items):
        n = len(it["input_ids"])
        ids[row, :n] = torch.tensor(it["input_ids"])
        labels[row, :n] = torch.tensor(it["labels"])
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def split_holdout(items: list, ratio: float, seed: int) -> tuple[list, list]:
    """Deterministic hold-out: the same seed and items give the same (train, eval) split."""
    if ratio <= 0 or len(items) < 2:
        return items, []
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed)).tolist()
    held = set(order[: min(len(items) - 1, max(1, round(len(items) * ratio)))])
    return [x for i, x in enumerate(items) if i not in held], [x for i, x in enumerate(items) if i in held]


def select_split(cfg, split: str, load) -> tuple[list, Path]:
    """Items of `split` from `data.eval_path`, or from `data.path` minus/plus the held-out share.
    `load(path, field)` reads one file or folder into a list of items."""
    data = cfg.data
    if split == "eval" and data.eval_path:
        path = resolve_text_path(data.eval_path, "data.eval_path")
        return load(path, "data.eval_path"), path
    path = resolve_text_path(data.path, "data.path")
    train, held = split_holdout(load(path, "data.path"), 0.0 if data.eval_path else data.eval_split_ratio,
                                cfg.training.seed)
    if split == "eval":
        return held, path
    return (train[: data.max_samples] if data.max_samples > 0 else train), path


def file_digest(path: Path, *extra) -> str:
    digest = hashlib.sha256(repr(extra).encode())
    for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
        if file.is_file():
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def build_chat_dataset(cfg, tokenizer, split: str = "train") -> TokenizedDataset:
    """SFT examples of `split`, truncated to `data.max_seq_length`; truncation is reported."""
    max_len = cfg.data.max_seq_length
    conversations, path = select_split(cfg, split, load_conversations)
    examples, truncated, dropped, longest = [], 0, 0, 0
    for number, messages in enumerate(conversations, start=1):
        try:
            ids, labels, full_len = tokenize_conversation(tokenizer, messages, max_len)
        except Exception as err:  # jinja TemplateError and friends: name the conversation
            raise DataError(f"data.path: conversation {number} of {path.name} cannot be rendered with the "
                            f"chat template: {err}") from None
        longest = max(longest, full_len)
        if full_len > max_len:
            truncated += 1
        if all(label == IGNORE_INDEX for label in labels):
            dropped += 1  # every assistant token was cut off: no loss to compute
            continue
        examples.append({"input_ids": ids, "labels": labels})
    report = ""
    if truncated:
        report = (f"{split} data: {truncated} of {len(conversations)} conversations are longer than "
                  f"data.max_seq_length={max_len} tokens (longest {longest}) and were truncated")
        report += f"; {dropped} kept no assistant token and were dropped" if dropped else ""
    if not examples and (split == "train" or conversations):
        raise DataError(f"data.path: no usable {split} conversations in {path.name}"
                        + (f" ({report})" if report else ""))
    return TokenizedDataset(examples, file_digest(path, split, max_len, tokenizer.name_or_path), report,
                            truncated)


# ---- fallback templates for tokenizers without one (FIELDS §3.1; `data.chat_template_fallback`) --------
CHAT_TEMPLATES = {
    # ChatML, as Qwen2 and many open chat models: <|im_start|>role\ncontent<|im_end|>\n
    "chatml": ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content']"
               " + '<|im_end|>' + '\\n' }}{% endfor %}"
               "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"),
    # Zephyr (HuggingFaceH4/zephyr-7b-beta): <|role|>\ncontent + eos
    "zephyr": ("{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + eos_token"
               " + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"),
    # Alpaca (tatsu-lab/stanford_alpaca): plain-text headers, the response ends with eos
    "alpaca": ("{% for message in messages %}{% if message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}"
               "{% elif message['role'] == 'user' %}{{ '### Instruction:\\n' + message['content'] + '\\n\\n' }}"
               "{% else %}{{ '### Response:\\n' + message['content'] + eos_token + '\\n\\n' }}{% endif %}"
               "{% endfor %}{% if add_generation_prompt %}{{ '### Response:\\n' }}{% endif %}"),
}
