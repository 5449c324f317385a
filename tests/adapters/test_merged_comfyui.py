"""`merged/` opens in ComfyUI's diffusers-folder loader: its CLIP text encoder keys carry the `text_model.`
level that ComfyUI's detection looks for (comfy/sd.py, e.g. `text_model.encoder.layers.1.mlp.fc1.weight`),
and transformers' `from_pretrained` still loads the folder to the same weights and outputs."""
from __future__ import annotations

import torch
from safetensors import safe_open

from tests.adapters.conftest import build, sd15_config, train_step


def test_merged_text_encoder_has_comfyui_keys_and_loads_in_transformers(tmp_path):
    from transformers import CLIPTextModel

    from studio.adapters.export import export_adapter
    from studio.adapters.verify import reference_outputs

    cfg = sd15_config(tmp_path, {"type": "lora", "train_text_encoder": True})
    family, handle = build(cfg)
    train_step(family, handle, lr=3e-2, steps=2)
    result = export_adapter(handle, "merged", tmp_path / "merged", reference_outputs(handle))
    assert result.ok, result.summary()

    folder = tmp_path / "merged" / "text_encoder"
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    assert keys and all(k.startswith("text_model.") for k in keys)
    assert "text_model.encoder.layers.1.mlp.fc1.weight" in keys  # what ComfyUI's CLIP detection reads

    loaded = CLIPTextModel.from_pretrained(str(folder)).eval()
    trained = handle.components["text_encoder"].eval()  # the adapter folded in by the merged export
    for name, value in trained.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    ids = torch.tensor([[49406, 320, 1615, 2368, 49407]]).clamp_max(loaded.config.vocab_size - 1)
    with torch.no_grad():
        assert torch.equal(loaded(ids).last_hidden_state, trained(ids).last_hidden_state)
    original = CLIPTextModel.from_pretrained(str(family.model_path), subfolder="text_encoder")
    assert not torch.equal(original(ids).last_hidden_state, loaded(ids).last_hidden_state)  # the merge is there
