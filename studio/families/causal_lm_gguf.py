"""A merged causal LM folder (transformers layout) -> one GGUF file for llama.cpp, Ollama, LM Studio
(seed 003's "Package" step), written with llama.cpp's own Python package `gguf` (GGUFWriter, its tensor
name map, SpecialVocab). No quantisation: f32, f16 or bf16 weights; 1-D weights (norms) stay f32, as
llama.cpp's converter keeps them.

llama.cpp's full converter (convert_hf_to_gguf.py) is not a package; what it does for the Llama
architecture is small and done here the same way: the metadata keys, the tensor names from gguf's map,
the query/key rows of Llama permuted to llama.cpp's rotary layout (`permute` below), and a byte-level
BPE vocabulary (tokens, types, merges, special ids, chat template, the name of its pre-split). transformers reads such a file back
(`from_pretrained(..., gguf_file=...)`, undoing the permutation), which is the export's check.
Architectures: Llama and Qwen2 (`LlamaForCausalLM`, `Qwen2ForCausalLM`); others are refused by name.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

DTYPES = ("f16", "bf16", "f32")
# transformers class -> (llama.cpp architecture, q/k rows permuted to llama.cpp's rotary layout)
ARCHITECTURES = {"LlamaForCausalLM": ("llama", True), "Qwen2ForCausalLM": ("qwen2", False)}


class GgufUnsupported(ValueError):
    pass


def permute(weights: torch.Tensor, n_head: int, n_head_kv: int | None = None) -> torch.Tensor:
    """The rotary row order llama.cpp expects for q/k of Llama (its converter's `permute`)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _state_dict(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise GgufUnsupported(f"{model_dir}: no .safetensors weights (a merged transformers folder is expected)")
    out: dict[str, torch.Tensor] = {}
    for file in files:
        out.update(load_file(str(file)))
    return out


def _pre_tokenizer(model_dir: Path, backend) -> str:
    """llama.cpp's name for how the text is split before BPE (`tokenizer.ggml.pre`), found by comparing
    the tokenizer's split pattern with the table transformers reads GGUF files with."""
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS

    pre = json.loads(backend.to_str()).get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre])
    patterns = [p.get("pattern", {}).get("Regex") for p in parts if p.get("type") == "Split"]
    if not patterns and any(p.get("type") == "ByteLevel" and p.get("use_regex") for p in parts):
        return "default"  # GPT-2's own split
    for name, regex in GGUF_PRE_TOKENIZER_SPLITS.items():
        if patterns == [regex]:
            return name
    raise GgufUnsupported(f"{model_dir}: the tokenizer splits text with {patterns or pre.get('type')}, which no GGUF "
                          "pre-tokenizer name known here describes")


def _vocab(model_dir: Path, writer, n_vocab: int) -> None:
    """The byte-level BPE vocabulary as llama.cpp's `gpt2` tokenizer model: every id's token, its type
    (control for special tokens), then merges, special ids and chat template through gguf's SpecialVocab."""
    import gguf
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    if tok.backend_tokenizer.model.__class__.__name__ != "BPE":
        raise GgufUnsupported(f"{model_dir}: the tokenizer is {tok.backend_tokenizer.model.__class__.__name__}; only "
                              "byte-level BPE vocabularies are written")
    by_id = {i: t for t, i in tok.get_vocab().items()}
    special = set(tok.all_special_tokens) | {t.content for t in tok.added_tokens_decoder.values() if t.special}
    tokens, types = [], []
    for i in range(n_vocab):
        token = by_id.get(i)
        if token is None:  # the embedding has rows the tokenizer never produces
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(token)
            types.append(gguf.TokenType.CONTROL if token in special else gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer(model_dir, tok.backend_tokenizer))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=n_vocab).add_to_gguf(writer, quiet=True)


def write_gguf(model_dir: str | Path, out_file: str | Path, dtype: str = "f16") -> Path:
    """Write `model_dir` (a merged causal LM) as one GGUF file; returns its path."""
    import gguf

    if dtype not in DTYPES:
        raise GgufUnsupported(f"GGUF type {dtype!r}: one of {', '.join(DTYPES)} (no quantisation)")
    model_dir, out_file = Path(model_dir), Path(out_file)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    names = config.get("architectures") or []
    found = next((ARCHITECTURES[n] for n in names if n in ARCHITECTURES), None)
    if found is None:
        raise GgufUnsupported(f"{model_dir}: architecture {names or config.get('model_type')} has no GGUF writer here "
                              f"(written: {', '.join(ARCHITECTURES)})")
    arch, permuted = found
    rope_type = (config.get("rope_parameters") or {}).get("rope_type", "default")
    if config.get("rope_scaling") or rope_type != "default" or (permuted and config.get("attention_bias")) \
            or config.get("mlp_bias"):
        raise GgufUnsupported(f"{model_dir}: rope scaling ({rope_type}) or biases in attention/MLP are not written "
                              "to GGUF here")
    n_head, n_kv = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    n_layers, hidden = config["num_hidden_layers"], config["hidden_size"]
    head_dim = config.get("head_dim") or hidden // n_head
    weights = _state_dict(model_dir)
    n_vocab = weights["model.embed_tokens.weight"].shape[0]
    if "lm_head.weight" not in weights and not config.get("tie_word_embeddings", False):
        raise GgufUnsupported(f"{model_dir}: lm_head.weight missing")

    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(out_file.name + ".part")
    writer = gguf.GGUFWriter(str(tmp), arch)
    writer.add_name(model_dir.name)
    writer.add_context_length(config.get("max_position_embeddings", 2048))
    writer.add_embedding_length(hidden)
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_dimension_count(head_dim)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_freq_base(float((config.get("rope_parameters") or {}).get("rope_theta")
                                    or config.get("rope_theta") or 10000.0))
    writer.add_layer_norm_rms_eps(config.get("rms_norm_eps", 1e-6))
    writer.add_vocab_size(n_vocab)
    writer.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                          "bf16": gguf.LlamaFileType.MOSTLY_BF16}[dtype])
    _vocab(model_dir, writer, n_vocab)

    names_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA if arch == "llama" else gguf.MODEL_ARCH.QWEN2,
                                         n_layers)
    for name, tensor in weights.items():
        if name.endswith("rotary_emb.inv_freq"):
            continue
        target = names_map.get_name(name, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise GgufUnsupported(f"{model_dir}: tensor {name} has no GGUF name for {arch}")
        data = tensor.to(torch.float32)
        if permuted and name.endswith("self_attn.q_proj.weight"):
            data = permute(data, n_head, n_head)
        elif permuted and name.endswith("self_attn.k_proj.weight"):
            data = permute(data, n_head, n_kv)
        array = data.numpy()
        if data.dim() == 1 or dtype == "f32":
            writer.add_tensor(target, array.astype(np.float32))
        elif dtype == "f16":
            writer.add_tensor(target, array.astype(np.float16))
        else:
            packed = gguf.quants.quantize(array, gguf.GGMLQuantizationType.BF16)
            writer.add_tensor(target, packed, raw_shape=packed.shape, raw_dtype=gguf.GGMLQuantizationType.BF16)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(out_file)
    return out_file


@torch.no_grad()
def check_gguf(model_dir: str | Path, gguf_file: str | Path, gguf_type: str = "f16",
               text: str = "Hello, how are you today?") -> dict:
    """Load the GGUF back with transformers and compare its token ids and logits with the merged model's,
    whose matrices are first rounded to `gguf_type` as the file holds them (so the comparison is tight
    whatever the type): {"max_abs_diff", "same_tokens", "ok"}."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir, gguf_file = Path(model_dir), Path(gguf_file)
    ref_tok = AutoTokenizer.from_pretrained(str(model_dir))
    ref = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    stored = {"f16": torch.float16, "bf16": torch.bfloat16}.get(gguf_type)
    for param in ref.parameters():
        if stored is not None and param.dim() > 1:
            param.copy_(param.to(stored).float())
    back_tok = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
    back = AutoModelForCausalLM.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name,
                                                dtype=torch.float32).eval()
    ids = ref_tok(text, return_tensors="pt").input_ids
    same_tokens = back_tok(text, return_tensors="pt").input_ids.tolist() == ids.tolist()
    a, b = ref(ids).logits, back(ids).logits
    diff = float((a - b).abs().max())
    scale = float(a.abs().max())
    return {"max_abs_diff": diff, "same_tokens": same_tokens, "ok": same_tokens and diff <= 1e-4 * max(scale, 1.0)}
