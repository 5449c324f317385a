"""Tokenizers for the tiny models, built offline from code (no hub download).

Each builder writes a folder that the real tokenizer class loads with `from_pretrained`:
a CLIP byte-level BPE (SD/SDXL/SD3/Flux), a T5 Unigram (SD3/Flux), and a byte-level BPE
trained on built-in text, saved with a ChatML template (causal LM) or as Qwen2 (ACE-Step).
"""

from __future__ import annotations

import string
from pathlib import Path

# A few words the demos and tests prompt with; they become whole-word merges so that
# prompts tokenize into short, realistic sequences instead of one token per letter.
PROMPT_WORDS = (
    "a", "photo", "of", "the", "cat", "dog", "on", "in", "and", "with", "style", "painting",
    "portrait", "red", "blue", "green", "house", "tree", "sky", "person", "man", "woman",
    "song", "music", "guitar", "piano", "drums", "pop", "rock", "jazz", "beat", "tiny",
)

# Built-in text the byte-level BPE is trained on (deterministic, nothing downloaded).
CORPUS = (
    "The quick brown fox jumps over the lazy dog. A tiny model answers questions about cats, "
    "dogs, music and paintings. User: hello! Assistant: Hi, how can I help you today? "
    "System: You are a helpful assistant. Write a short poem about the sea and the sky. "
    "Numbers 0 1 2 3 4 5 6 7 8 9 and symbols , . ; : ! ? ( ) [ ] { } < > = + - * / are here. "
    "Chat roles: system, user, assistant. The user asks and the assistant answers. "
)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode map (openai/CLIP simple_tokenizer.py)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars)}


def word_merges(words: tuple[str, ...]) -> list[tuple[str, str]]:
    """Left-to-right merges that build each whole word ending in `</w>` (CLIP's word form)."""
    merges: list[tuple[str, str]] = []
    for word in words:
        if len(word) < 2:
            continue
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        left = symbols[0]
        for right in symbols[1:]:
            if (left, right) not in merges:
                merges.append((left, right))
            left += right
    return merges


def clip_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The CLIP vocab layout: 256 bytes, 256 `</w>` forms, merge results, then the 2 specials."""
    alphabet = list(bytes_to_unicode().values())
    tokens = alphabet + [c + "</w>" for c in alphabet]
    merges = word_merges(PROMPT_WORDS)
    tokens += [a + b for a, b in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(tokens)}, merges


def write_clip_tokenizer(out_dir: Path, pad_token: str = "<|endoftext|>") -> int:
    """Write a CLIPTokenizer folder (model_max_length 77); returns its vocab size.

    SD1.5/SDXL's first tokenizer pads with `<|endoftext|>`, SDXL's second with `!`.
    """
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab_and_merges()
    tok = CLIPTokenizer(vocab=vocab, merges=merges, pad_token=pad_token, model_max_length=77)
    tok.save_pretrained(str(out_dir))
    write_bpe_files(Path(out_dir), vocab, merges)
    return len(vocab)


# ChatML (as Qwen2 and many open chat models): each turn is <|im_start|>role\ncontent<|im_end|>\n
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CHAT_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>")


def train_byte_bpe(vocab_size: int = 384):
    """Train a byte-level BPE (GPT-2/Qwen style) on CORPUS; every byte encodes, so no <unk>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(CHAT_SPECIALS), show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator([CORPUS] * 4, trainer=trainer)
    return bpe


def write_chatml_tokenizer(out_dir: Path) -> int:
    """Save the trained BPE as a fast tokenizer with a ChatML template; returns the vocab size.

    eos is <|im_end|> (ends an assistant turn), pad is a separate <|pad|> so that masking
    padding never masks the eos the model must learn; <|endoftext|> separates documents.
    """
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=train_byte_bpe(), bos_token="<|endoftext|>", eos_token="<|im_end|>",
        pad_token="<|pad|>", additional_special_tokens=["<|im_start|>"],
        chat_template=CHATML_TEMPLATE, model_max_length=512,
    )
    tok.save_pretrained(str(out_dir))
    return len(tok)


def write_qwen_tokenizer(out_dir: Path) -> int:
    """A Qwen2Tokenizer (ACE-Step's text encoder is Qwen3): the trained BPE's vocab and merges
    under Qwen's own pre-tokenizer, <|endoftext|> as eos and pad. Returns the vocab size."""
    import json

    from transformers import Qwen2Tokenizer

    model = json.loads(train_byte_bpe().to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tok = Qwen2Tokenizer(
        vocab=model["vocab"], merges=merges, additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        model_max_length=2048,
    )
    tok.save_pretrained(str(out_dir))
    return len(tok)


def write_bpe_files(out_dir: Path, vocab: dict[str, int], merges: list[tuple[str, str]]) -> None:
    """Also write vocab.json + merges.txt: older/slow CLIP tokenizers (kohya, A1111) read these."""
    import json

    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=0), "utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (out_dir / "merges.txt").write_text("\n".join(lines) + "\n", "utf-8")


def t5_vocab(extra_ids: int = 100) -> list[tuple[str, float]]:
    """T5's Unigram layout: <pad>=0, </s>=1, <unk>=2, pieces, then <extra_id_N> descending.

    Pieces are single characters (alone and after the `▁` word marker) plus whole prompt
    words with a better log-probability, so Unigram prefers the whole word when it exists.
    """
    chars = string.ascii_letters + string.digits + ".,;:!?'\"()[]-_/"
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(c, -6.0) for c in chars] + [("▁" + c, -5.0) for c in chars]
    pieces += [("▁" + w, -3.0) for w in PROMPT_WORDS if len(w) > 1]
    pieces += [(f"<extra_id_{i}>", 0.0) for i in range(extra_ids - 1, -1, -1)]
    return pieces


def write_t5_tokenizer(out_dir: Path) -> int:
    """Write a T5 Unigram tokenizer folder (as SD3's/Flux's tokenizer_3/_2); returns vocab size."""
    from transformers import T5Tokenizer

    tok = T5Tokenizer(vocab=t5_vocab(), extra_ids=100, model_max_length=512)
    tok.save_pretrained(str(out_dir))
    return len(tok)
