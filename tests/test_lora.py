"""SFT with LoRA on a tiny random Llama saved to a temp dir: the user's path for a real checkpoint."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM
from typer.testing import CliRunner

from align.cli import app
from align.sandbox.tokenizer import train_tokenizer


def test_lora_sft_on_a_local_checkpoint(tmp_path):
    texts = ["Where does Kesjor live?", "The answer is Lunia.", "What is 3 plus 4?", "I can't help with that."] * 30
    tokenizer = train_tokenizer(texts, vocab_size=400)
    base = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
        intermediate_size=64, max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id))
    ckpt = tmp_path / "tiny-llama"
    base.save_pretrained(ckpt)
    tokenizer.save_pretrained(ckpt)
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "run", "configs/smoke.yaml", "--run-dir", str(run_dir), "--set", f"model.path={ckpt}",
        "--set", "sft.lora.enabled=true", "--set", "sft.lora.r=4", "--set", "sft.lr=1e-2", "--set", "sft.epochs=2"])
    assert result.exit_code == 0, result.output
    sft = run_dir / "rounds" / "01-sft"
    adapter = load_file(sft / "adapter" / "adapter_model.safetensors")
    assert adapter and all("lora_" in k for k in adapter)
    config = json.loads((sft / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 4 and set(config["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    merged = load_file(next((sft / "model").glob("*.safetensors")))
    before = base.state_dict()
    # LoRA changed the attention projections (merged in), and left every other weight alone.
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(merged[q], before[q])
    mlp = "model.layers.0.mlp.up_proj.weight"
    assert torch.equal(merged[mlp], before[mlp])
    steps = [json.loads(line) for line in (sft / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1]["losses/sft"] < steps[0]["losses/sft"]
