"""The tiny flow transformers written back in their makers' original layout: the single `.safetensors`
file BFL (Flux), Stability (SD3), Tongyi (Z-Image) and CircleStone (Anima) publish and ComfyUI loads.

Each writer is the inverse of diffusers' own converter (`diffusers.loaders.single_file_utils.convert_*`),
and `tests/families/test_single_file.py` checks that: the converter maps the file back onto the diffusers
state dict exactly. Test-only: the studio reads such files, it does not write them.
"""
from __future__ import annotations

import torch


def _swap_halves(t: torch.Tensor) -> torch.Tensor:
    a, b = t.chunk(2, dim=0)  # shift/scale <-> scale/shift (its own inverse)
    return torch.cat([b, a], dim=0)


def _linear(out: dict, new: str, sd: dict, old: str, bias: bool = True) -> None:
    out[f"{new}.weight"] = sd.pop(f"{old}.weight")
    if bias:
        out[f"{new}.bias"] = sd.pop(f"{old}.bias")


def _fused(out: dict, new: str, sd: dict, olds: list[str], bias: bool = True) -> None:
    out[f"{new}.weight"] = torch.cat([sd.pop(f"{o}.weight") for o in olds])
    if bias:
        out[f"{new}.bias"] = torch.cat([sd.pop(f"{o}.bias") for o in olds])


def _final_layer(out: dict, sd: dict, what: str) -> dict:
    """The output layer both MMDiTs share, its adaLN halves swapped; every key must be mapped by now."""
    _linear(out, "final_layer.linear", sd, "proj_out")
    out["final_layer.adaLN_modulation.1.weight"] = _swap_halves(sd.pop("norm_out.linear.weight"))
    out["final_layer.adaLN_modulation.1.bias"] = _swap_halves(sd.pop("norm_out.linear.bias"))
    assert not sd, f"{what} keys left unmapped: {sorted(sd)[:5]}"
    return out


def _count(sd: dict, prefix: str) -> int:
    return len({k.split(".")[1] for k in sd if k.startswith(prefix)})


def flux_original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    sd, out = dict(state), {}
    for new, old in (("time_in", "time_text_embed.timestep_embedder"), ("vector_in", "time_text_embed.text_embedder"),
                     ("guidance_in", "time_text_embed.guidance_embedder")):
        if f"{old}.linear_1.weight" in sd:
            _linear(out, f"{new}.in_layer", sd, f"{old}.linear_1")
            _linear(out, f"{new}.out_layer", sd, f"{old}.linear_2")
    _linear(out, "txt_in", sd, "context_embedder")
    _linear(out, "img_in", sd, "x_embedder")
    for i in range(_count(sd, "transformer_blocks.")):
        b, o = f"transformer_blocks.{i}.", f"double_blocks.{i}."
        _linear(out, f"{o}img_mod.lin", sd, f"{b}norm1.linear")
        _linear(out, f"{o}txt_mod.lin", sd, f"{b}norm1_context.linear")
        _fused(out, f"{o}img_attn.qkv", sd, [f"{b}attn.to_{x}" for x in "qkv"])
        _fused(out, f"{o}txt_attn.qkv", sd, [f"{b}attn.add_{x}_proj" for x in "qkv"])
        for new, old in (("img_attn.norm.query_norm", "norm_q"), ("img_attn.norm.key_norm", "norm_k"),
                         ("txt_attn.norm.query_norm", "norm_added_q"), ("txt_attn.norm.key_norm", "norm_added_k")):
            out[f"{o}{new}.scale"] = sd.pop(f"{b}attn.{old}.weight")
        _linear(out, f"{o}img_mlp.0", sd, f"{b}ff.net.0.proj")
        _linear(out, f"{o}img_mlp.2", sd, f"{b}ff.net.2")
        _linear(out, f"{o}txt_mlp.0", sd, f"{b}ff_context.net.0.proj")
        _linear(out, f"{o}txt_mlp.2", sd, f"{b}ff_context.net.2")
        _linear(out, f"{o}img_attn.proj", sd, f"{b}attn.to_out.0")
        _linear(out, f"{o}txt_attn.proj", sd, f"{b}attn.to_add_out")
    for i in range(_count(sd, "single_transformer_blocks.")):
        b, o = f"single_transformer_blocks.{i}.", f"single_blocks.{i}."
        _linear(out, f"{o}modulation.lin", sd, f"{b}norm.linear")
        _fused(out, f"{o}linear1", sd, [f"{b}attn.to_q", f"{b}attn.to_k", f"{b}attn.to_v", f"{b}proj_mlp"])
        out[f"{o}norm.query_norm.scale"] = sd.pop(f"{b}attn.norm_q.weight")
        out[f"{o}norm.key_norm.scale"] = sd.pop(f"{b}attn.norm_k.weight")
        _linear(out, f"{o}linear2", sd, f"{b}proj_out")
    return _final_layer(out, sd, "Flux")


def sd3_original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    sd, out = dict(state), {}
    out["pos_embed"] = sd.pop("pos_embed.pos_embed")
    _linear(out, "x_embedder.proj", sd, "pos_embed.proj")
    _linear(out, "t_embedder.mlp.0", sd, "time_text_embed.timestep_embedder.linear_1")
    _linear(out, "t_embedder.mlp.2", sd, "time_text_embed.timestep_embedder.linear_2")
    _linear(out, "context_embedder", sd, "context_embedder")
    _linear(out, "y_embedder.mlp.0", sd, "time_text_embed.text_embedder.linear_1")
    _linear(out, "y_embedder.mlp.2", sd, "time_text_embed.text_embedder.linear_2")
    layers = _count(sd, "transformer_blocks.")
    for i in range(layers):
        b, x, c = f"transformer_blocks.{i}.", f"joint_blocks.{i}.x_block.", f"joint_blocks.{i}.context_block."
        last = i == layers - 1
        _fused(out, f"{x}attn.qkv", sd, [f"{b}attn.to_{q}" for q in "qkv"])
        _fused(out, f"{c}attn.qkv", sd, [f"{b}attn.add_{q}_proj" for q in "qkv"])
        if f"{b}attn.norm_q.weight" in sd:
            out[f"{x}attn.ln_q.weight"] = sd.pop(f"{b}attn.norm_q.weight")
            out[f"{x}attn.ln_k.weight"] = sd.pop(f"{b}attn.norm_k.weight")
            out[f"{c}attn.ln_q.weight"] = sd.pop(f"{b}attn.norm_added_q.weight")
            out[f"{c}attn.ln_k.weight"] = sd.pop(f"{b}attn.norm_added_k.weight")
        _linear(out, f"{x}attn.proj", sd, f"{b}attn.to_out.0")
        if not last:
            _linear(out, f"{c}attn.proj", sd, f"{b}attn.to_add_out")
        if f"{b}attn2.to_q.weight" in sd:
            _fused(out, f"{x}attn2.qkv", sd, [f"{b}attn2.to_{q}" for q in "qkv"])
            if f"{b}attn2.norm_q.weight" in sd:
                out[f"{x}attn2.ln_q.weight"] = sd.pop(f"{b}attn2.norm_q.weight")
                out[f"{x}attn2.ln_k.weight"] = sd.pop(f"{b}attn2.norm_k.weight")
            _linear(out, f"{x}attn2.proj", sd, f"{b}attn2.to_out.0")
        _linear(out, f"{x}adaLN_modulation.1", sd, f"{b}norm1.linear")
        if last:  # the last context block ends the stream: a scale/shift-only norm, halves swapped
            out[f"{c}adaLN_modulation.1.weight"] = _swap_halves(sd.pop(f"{b}norm1_context.linear.weight"))
            out[f"{c}adaLN_modulation.1.bias"] = _swap_halves(sd.pop(f"{b}norm1_context.linear.bias"))
        else:
            _linear(out, f"{c}adaLN_modulation.1", sd, f"{b}norm1_context.linear")
        _linear(out, f"{x}mlp.fc1", sd, f"{b}ff.net.0.proj")
        _linear(out, f"{x}mlp.fc2", sd, f"{b}ff.net.2")
        if not last:
            _linear(out, f"{c}mlp.fc1", sd, f"{b}ff_context.net.0.proj")
            _linear(out, f"{c}mlp.fc2", sd, f"{b}ff_context.net.2")
    return _final_layer(out, sd, "SD3")


def zimage_original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    sd, out = dict(state), {}
    for key in sorted(sd):
        if key.endswith(".attention.to_q.weight"):
            stem = key.removesuffix(".to_q.weight")
            out[f"{stem}.qkv.weight"] = torch.cat([sd.pop(f"{stem}.to_{x}.weight") for x in "qkv"])
    for key, value in sd.items():
        for new, old in (("final_layer.", "all_final_layer.2-1."), ("x_embedder.", "all_x_embedder.2-1."),
                         (".attention.out.", ".attention.to_out.0."), (".attention.k_norm.", ".attention.norm_k."),
                         (".attention.q_norm.", ".attention.norm_q.")):
            key = key.replace(old, new)
        out[key] = value
    return out


# diffusers' Cosmos 2.0 renames (original -> diffusers), undone last-first; Anima's LLM adapter keeps its names.
_COSMOS_RENAMES = (("t_embedder.1", "time_embed.t_embedder"), ("t_embedding_norm", "time_embed.norm"),
                   ("blocks", "transformer_blocks"), ("adaln_modulation_self_attn.1", "norm1.linear_1"),
                   ("adaln_modulation_self_attn.2", "norm1.linear_2"), ("adaln_modulation_cross_attn.1", "norm2.linear_1"),
                   ("adaln_modulation_cross_attn.2", "norm2.linear_2"), ("adaln_modulation_mlp.1", "norm3.linear_1"),
                   ("adaln_modulation_mlp.2", "norm3.linear_2"), ("self_attn", "attn1"), ("cross_attn", "attn2"),
                   ("q_proj", "to_q"), ("k_proj", "to_k"), ("v_proj", "to_v"), ("output_proj", "to_out.0"),
                   ("q_norm", "norm_q"), ("k_norm", "norm_k"), ("mlp.layer1", "ff.net.0.proj"),
                   ("mlp.layer2", "ff.net.2"), ("x_embedder.proj.1", "patch_embed.proj"),
                   ("final_layer.adaln_modulation.1", "norm_out.linear_1"),
                   ("final_layer.adaln_modulation.2", "norm_out.linear_2"), ("final_layer.linear", "proj_out"))


def anima_original(transformer: dict[str, torch.Tensor], llm_adapter: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in transformer.items():
        for old, new in reversed(_COSMOS_RENAMES):
            key = key.replace(new, old)
        out[f"net.{key}"] = value
    out.update({f"net.llm_adapter.{k}": v for k, v in llm_adapter.items()})
    return out


# ---- SD 1.5 / SDXL: the LDM UNet of CompVis / Stability checkpoints ------------------------------------
_RESNET = (("in_layers.0", "norm1"), ("in_layers.2", "conv1"), ("out_layers.0", "norm2"), ("out_layers.3", "conv2"),
           ("emb_layers.1", "time_emb_proj"), ("skip_connection", "conv_shortcut"))
_UNET_TOP = (("time_embed.0", "time_embedding.linear_1"), ("time_embed.2", "time_embedding.linear_2"),
             ("label_emb.0.0", "add_embedding.linear_1"), ("label_emb.0.2", "add_embedding.linear_2"),
             ("input_blocks.0.0", "conv_in"), ("out.0", "conv_norm_out"), ("out.2", "conv_out"))


def unet_original(state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """A diffusers UNet2DConditionModel's weights in the LDM layout (`model.diffusion_model.*`), for any
    number of levels and layers per block: the inverse of diffusers' `convert_ldm_unet_checkpoint`."""
    n, levels = config["layers_per_block"], len(config["block_out_channels"])
    prefixes = []  # (original prefix, diffusers prefix, is a resnet)
    for i in range(levels):
        for j in range(n):
            prefixes += [(f"input_blocks.{1 + i * (n + 1) + j}.0.", f"down_blocks.{i}.resnets.{j}.", True),
                         (f"input_blocks.{1 + i * (n + 1) + j}.1.", f"down_blocks.{i}.attentions.{j}.", False)]
        prefixes.append((f"input_blocks.{(i + 1) * (n + 1)}.0.op.", f"down_blocks.{i}.downsamplers.0.conv.", False))
        up_attn = any(k.startswith(f"up_blocks.{i}.attentions.") for k in state)
        for j in range(n + 1):
            prefixes += [(f"output_blocks.{i * (n + 1) + j}.0.", f"up_blocks.{i}.resnets.{j}.", True),
                         (f"output_blocks.{i * (n + 1) + j}.1.", f"up_blocks.{i}.attentions.{j}.", False)]
        prefixes.append((f"output_blocks.{i * (n + 1) + n}.{2 if up_attn else 1}.", f"up_blocks.{i}.upsamplers.0.", False))
    prefixes += [("middle_block.0.", "mid_block.resnets.0.", True), ("middle_block.1.", "mid_block.attentions.0.", False),
                 ("middle_block.2.", "mid_block.resnets.1.", True)]
    out = {}
    for key, value in state.items():
        new = key
        for old, hf in _UNET_TOP:
            if key.startswith(hf + "."):
                new = old + key[len(hf):]
        for old, hf, resnet in prefixes:
            if key.startswith(hf):
                rest = key[len(hf):]
                if resnet:
                    for o, h in _RESNET:
                        rest = rest.replace(h, o) if rest.startswith(h) else rest
                new = old + rest
        out["model.diffusion_model." + new] = value
    return out


def clip_original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """SD 1.5's CLIP text encoder as its checkpoints hold it: transformers' names under
    `cond_stage_model.transformer.text_model.` (transformers 5 saves them without the `text_model.` level)."""
    return {f"cond_stage_model.transformer.text_model.{k.removeprefix('text_model.')}": v for k, v in state.items()}
