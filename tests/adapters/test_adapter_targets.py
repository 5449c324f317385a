"""Where the adapter goes (attention_type, separate self/cross lists), starting from an existing adapter,
text-encoder training with its own learning rate, and DyLoRA's trained network matching its file."""
from __future__ import annotations

import pytest
import torch

from tests.adapters.conftest import build, output, rel, sd15_config, train_step


def adapted(handle) -> set[str]:
    return set(handle.targets["unet"].modules)


def test_attention_type_picks_self_or_cross_attention(tmp_path):
    _, both = build(sd15_config(tmp_path, {}))
    _, self_only = build(sd15_config(tmp_path, {"attention_type": "self"}))
    _, cross_only = build(sd15_config(tmp_path, {"attention_type": "cross"}))
    assert adapted(self_only) and all(".attn1." in n for n in adapted(self_only))
    assert adapted(cross_only) and all(".attn2." in n for n in adapted(cross_only))
    assert adapted(self_only) | adapted(cross_only) == adapted(both)
    # ... and PEFT put layers exactly there
    lora_layers = {n for n, m in cross_only.module.named_modules() if hasattr(m, "lora_A")}
    assert lora_layers == adapted(cross_only)


def test_separate_self_and_cross_targets(tmp_path):
    _, handle = build(sd15_config(tmp_path, {"self_target_modules": "to_q", "cross_target_modules": "to_k to_v"}))
    names = adapted(handle)
    last_two = {".".join(n.split(".")[-2:]) for n in names}
    assert last_two == {"attn1.to_q", "attn2.to_k", "attn2.to_v"}


def test_conv_targets_stay_with_attention_type_self(tmp_path):
    _, handle = build(sd15_config(tmp_path, {"type": "locon", "conv_rank": 2, "attention_type": "self"}))
    names = adapted(handle)
    assert any(n.endswith("resnets.0.conv1") for n in names)
    assert not any(".attn2." in n for n in names)


def test_a_target_that_matches_nothing_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"adapter.target_modules: 'to_x' matches no adaptable layer"):
        build(sd15_config(tmp_path, {"target_modules": "to_q to_x"}))
    with pytest.raises(ValueError, match="adapter.target_modules: 'attn1.to_q' matches no adaptable layer of the kind"):
        build(sd15_config(tmp_path, {"target_modules": "to_k attn1.to_q", "attention_type": "cross"}))
    # layers outside attention are kept whatever attention_type says
    _, handle = build(sd15_config(tmp_path, {"target_modules": "to_q ff.net.2", "attention_type": "cross"}))
    assert any(n.endswith("ff.net.2") for n in adapted(handle))


def test_init_from_a_run_folder_and_from_a_kohya_file(tmp_path):
    from studio.adapters.writer import write_kohya

    family, handle = build(sd15_config(tmp_path, {"type": "lora", "alpha": 8}))
    train_step(family, handle, lr=3e-2)
    trained = output(family, handle)
    handle.save(tmp_path / "first")
    kohya = write_kohya(handle, tmp_path / "first.safetensors")

    family2, again = build(sd15_config(tmp_path, {"type": "lora", "alpha": 8, "init_from": str(tmp_path / "first")}))
    assert rel(output(family2, again), trained) < 1e-5
    # a kohya file at another alpha: its own strength is kept (alpha folded into lora_up)
    family3, from_kohya = build(sd15_config(tmp_path, {"type": "lora", "alpha": 2, "init_from": str(kohya)}))
    assert rel(output(family3, from_kohya), trained) < 1e-5


def test_init_from_a_missing_file_names_the_field(tmp_path):
    with pytest.raises(FileNotFoundError, match="adapter.init_from"):
        build(sd15_config(tmp_path, {"init_from": str(tmp_path / "nope")}))


def test_text_encoder_adapter_trains_at_its_own_learning_rate_and_exports(tmp_path):
    from safetensors.torch import load_file

    from studio.adapters.export import finish_exports

    cfg = sd15_config(tmp_path, {"type": "lora", "train_text_encoder": True, "text_encoder_lr": 1e-3})
    family, handle = build(cfg)
    assert list(handle.components) == ["unet", "text_encoder"]
    groups = handle.param_groups(1e-2)
    assert [g["lr"] for g in groups] == [1e-2, 1e-3] and all(g["params"] for g in groups)
    te_before = {k: v.clone() for k, v in handle.component_state_dicts()["text_encoder"].items()}
    train_step(family, handle, lr=1e-2)
    te_after = handle.component_state_dicts()["text_encoder"]
    assert any(not torch.equal(te_before[k], te_after[k]) for k in te_before), "the text-encoder adapter did not train"
    results = finish_exports(handle, tmp_path / "run", step=1)
    assert [r.fmt for r in results] == ["peft", "kohya"] and all(r.ok for r in results)
    kohya = load_file(str(next((tmp_path / "run").glob("*_kohya.safetensors"))))
    assert any(k.startswith("lora_te_text_model_encoder_layers_0_self_attn_q_proj.") for k in kohya)
    peft = load_file(str(tmp_path / "run" / "adapter_model.safetensors"))
    assert any(k.startswith("text_encoder.") for k in peft) and any(k.startswith("unet.") for k in peft)


def test_dylora_in_eval_is_deterministic_and_matches_its_file(tmp_path):
    cfg = sd15_config(tmp_path, {"type": "dylora", "rank": 4, "network_args": "block_size=2"})
    family, handle = build(cfg)
    train_step(family, handle, lr=3e-2, steps=2)
    first, second = output(family, handle), output(family, handle)
    assert torch.equal(first, second)
    handle.save(tmp_path / "saved")
    from studio.adapters.writer import read_adapter_folder

    family2, handle2 = build(cfg)
    handle2.load_component_state_dicts(read_adapter_folder(tmp_path / "saved", handle2))
    assert rel(output(family2, handle2), first) < 1e-5
