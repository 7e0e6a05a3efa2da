"""Multi-process runs under ``accelerate launch`` on the CPU (DDP over gloo, two processes): the same
training as one process, sharded sampling equal to one process's, a killed process, and only the main
process writing the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, SMOKE, align_cli

ACCELERATE = Path(sys.executable).parent / "accelerate"
LAUNCH = [str(ACCELERATE), "launch", "--config_file", str(ROOT / "configs" / "accelerate" / "cpu-2proc.yaml")]
# per logged step, the two-process loss within this share of the one-process loss: the global batch is the
# same, but each process averages its own slice's tokens (SFT) and the sums are reduced in another order;
# measured: at most 3.1% over the smoke SFT's and reward models' logged steps
TOLERANCE = 0.05


def _launch(*args: str, env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*LAUNCH, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env or {})})


def _losses(run_dir: Path, round_id: str, key: str) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "rounds" / round_id / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r[key] for r in rows}


def _round_dirs(run_dir: Path) -> list[str]:
    """The rounds in place; and nothing half-built (``.tmp-*``) or moved aside by a second commit (``.superseded``)."""
    names = sorted(p.name for p in (run_dir / "rounds").iterdir())
    assert not [n for n in names if n.startswith(".tmp") or n == ".superseded"], names
    return [n for n in names if not n.startswith(".")]


pytestmark = pytest.mark.skipif(not ACCELERATE.exists(), reason="accelerate's launcher is not installed")


def test_two_processes_train_as_one_and_write_each_round_once(tmp_path):
    # the whole smoke campaign on 2 processes (SFT, reward models, RS fine-tunes, preference refresh, PPO with its
    # critic and reference); SFT and the first reward models against one process
    one, two = tmp_path / "one", tmp_path / "two"
    until = ["--until", "04-rm-safety", "-q"]
    assert align_cli("run", str(SMOKE), "--run-dir", str(one), *until).returncode == 0
    launched = _launch("-m", "align.cli", "run", str(SMOKE), "--run-dir", str(two), "-q",
                       env={"TMPDIR": str(tmp_path)})
    assert launched.returncode == 0, launched.stderr[-3000:]
    # the main process speaks for the run: its result lines once, not once per process
    assert launched.stdout.count("01-sft: violation_rate=") == 1
    for round_id, key in (("01-sft", "losses/sft"), ("03-rm-helpfulness", "losses/total"),
                          ("04-rm-safety", "losses/total")):
        a, b = _losses(one, round_id, key), _losses(two, round_id, key)
        assert a.keys() == b.keys() and len(a) >= 3, round_id
        worst = max(abs(a[s] - b[s]) / abs(a[s]) for s in a)
        assert worst <= TOLERANCE, f"{round_id}: {key} differs by {worst:.1%} at worst"
    first = min(_losses(one, "01-sft", "losses/sft"))  # the same weights and batch at the first step
    assert _losses(two, "01-sft", "losses/sft")[first] == pytest.approx(_losses(one, "01-sft", "losses/sft")[first],
                                                                         rel=1e-3)
    # each round committed once, by the main process: no second commit moved a first one aside, nothing
    # half-built left, and the other process's scratch folders are gone
    assert _round_dirs(one) == ["00-sandbox", "01-sft", "02-eval", "03-rm-helpfulness", "04-rm-safety"]
    assert _round_dirs(two) == _round_dirs(one) + ["05-rs", "06-prefs", "07-rm-helpfulness", "08-rm-safety", "09-rs",
                                                   "10-ppo"]
    assert not list(tmp_path.glob("align-*-rank1-*"))
    verified = align_cli("verify", str(two))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # resumable like any run: one process reuses what two built
    again = align_cli("run", str(SMOKE), "--run-dir", str(two), *until[:2])
    assert again.returncode == 0 and again.stderr.count("completed earlier: reused") == 5, again.stderr


SAMPLER = """
import json, sys
from pathlib import Path
from align import distributed
from align.generate import sample_completions, sample_k
from align.models import load_causal_lm, load_tokenizer
from align.sandbox.build import read_prompts

model_dir, world, out = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
tok, model = load_tokenizer(model_dir), load_causal_lm(model_dir)
prompts = [p.text for p in read_prompts(world, "eval")][:13]
groups = sample_k(model, tok, prompts, k=3, temperature=1.0, top_p=1.0, max_new_tokens=12, batch_size=4, seed=7)
answers = sample_completions(model, tok, prompts, temperature=0.9, top_p=0.95, max_new_tokens=12, batch_size=5, seed=3)
if distributed.is_main():
    json.dump({"k": [[[s.prompt_index, s.token_ids, s.logprobs] for s in g] for g in groups],
               "completions": [[c.text, c.finished, c.num_tokens] for c in answers]}, open(out, "w"))
"""


def test_sharded_sampling_equals_one_process(completed_smoke_run, tmp_path):
    run_dir = completed_smoke_run[0]
    script = tmp_path / "sample.py"
    script.write_text(SAMPLER)
    args = [str(run_dir / "rounds" / "01-sft" / "model"), str(run_dir / "rounds" / "00-sandbox")]
    alone = subprocess.run([sys.executable, str(script), *args, str(tmp_path / "one.json")], cwd=ROOT,
                           capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert alone.returncode == 0, alone.stderr[-3000:]
    launched = _launch(str(script), *args, str(tmp_path / "two.json"), env={"PYTHONPATH": str(ROOT)})
    assert launched.returncode == 0, launched.stderr[-3000:]
    one, two = (json.loads((tmp_path / f).read_text()) for f in ("one.json", "two.json"))
    assert len(one["k"]) == 13 and all(len(g) == 3 for g in one["k"])  # 4 batches of 4 prompts: 2 per process
    assert [[s[:2] for s in g] for g in two["k"]] == [[s[:2] for s in g] for g in one["k"]]  # same tokens, order
    for g1, g2 in zip(one["k"], two["k"]):
        for s1, s2 in zip(g1, g2):
            assert s2[2] == pytest.approx(s1[2], abs=1e-5)
    assert two["completions"] == one["completions"]
    assert len({tuple(s[1]) for g in one["k"] for s in g}) > 13  # the draws are random, not all one answer


def test_killed_process_stops_the_run_and_the_next_run_resumes(tmp_path):
    run_dir = tmp_path / "run"
    until = ["--until", "01-sft", "-q"]
    killed = _launch("-m", "align.cli", "run", str(SMOKE), "--run-dir", str(run_dir), *until,
                     env={"ALIGN_CRASH_AT": "step-20:sft@1"})  # rank 1 is SIGKILLed after its 20th SFT step
    assert killed.returncode != 0
    assert "another process of this run stopped" in killed.stderr
    assert "unexpected error" not in killed.stderr  # a peer's death is not reported as a bug
    assert _round_dirs(run_dir) == ["00-sandbox"]  # 01-sft was not committed, nothing half-built in place
    resumed = align_cli("run", str(SMOKE), "--run-dir", str(run_dir), *until[:2])
    assert resumed.returncode == 0, resumed.stderr
    assert "[00-sandbox] completed earlier: reused" in resumed.stderr and "[01-sft] running sft" in resumed.stderr
    assert _round_dirs(run_dir) == ["00-sandbox", "01-sft"]
    assert align_cli("verify", str(run_dir)).returncode == 0


FSDP_SAVE = """
import sys, torch
from pathlib import Path
from align import distributed
distributed.state()
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from transformers import LlamaConfig, LlamaForCausalLM
from align.models import save_model
from align.sandbox.tokenizer import train_tokenizer
out = Path(sys.argv[1])
tok = train_tokenizer(["hello world", "the answer is 7"] * 20, vocab_size=300)
torch.manual_seed(0)
m = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=64, tie_word_embeddings=False))
torch.save({k: v.clone() for k, v in m.state_dict().items()}, out / "full.pt") if distributed.is_main() else None
mesh = init_device_mesh("cpu", (2,))
for layer in m.model.layers:
    fully_shard(layer, mesh=mesh)
fully_shard(m, mesh=mesh)
assert type(next(m.parameters())).__name__ == "DTensor" and next(m.parameters()).to_local().shape[0] < len(tok)
rank = distributed.world()[0]
target = out / ("main" if rank == 0 else f"scratch{rank}")
save_model(m, tok, target / "model", adapter_dir=target / "adapter")

# a LoRA policy sharded the same way: the adapter and the merged weights saved whole
import copy
from peft import LoraConfig, get_peft_model
torch.manual_seed(1)
base = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=64, tie_word_embeddings=False))
lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
if distributed.is_main():
    torch.save({"merged": copy.deepcopy(lora).merge_and_unload().state_dict(),
                "adapter": {k: v.clone() for k, v in lora.state_dict().items() if "lora_" in k}}, out / "lora.pt")
for layer in lora.base_model.model.model.layers:
    fully_shard(layer, mesh=mesh)
fully_shard(lora, mesh=mesh)
save_model(lora, tok, target / "lora-model", adapter_dir=target / "lora-adapter")
"""


def test_models_sharded_by_fsdp_are_saved_whole(tmp_path):
    # FSDP version 2 on the CPU (gloo), applied directly: accelerate's FSDP path needs GPUs
    import torch
    from transformers import LlamaForCausalLM

    script = tmp_path / "save.py"
    script.write_text(FSDP_SAVE)
    launched = _launch(str(script), str(tmp_path), env={"PYTHONPATH": str(ROOT)})
    assert launched.returncode == 0, launched.stderr[-3000:]
    full = torch.load(tmp_path / "full.pt")
    saved = LlamaForCausalLM.from_pretrained(tmp_path / "main" / "model").state_dict()
    assert set(saved) == set(full)
    assert all(torch.equal(saved[k], full[k]) for k in full)  # the gathered weights, not one process's shard
    assert (tmp_path / "scratch1" / "model" / "model.safetensors").exists()  # the other process reads the same files
    # the LoRA policy: merged weights equal merge_and_unload's, the adapter equal the unsharded one's
    from safetensors.torch import load_file

    expected = torch.load(tmp_path / "lora.pt")
    merged = LlamaForCausalLM.from_pretrained(tmp_path / "main" / "lora-model").state_dict()
    assert set(merged) == set(expected["merged"])
    for k, v in expected["merged"].items():
        assert torch.allclose(merged[k], v, atol=1e-6), k
    adapter = load_file(tmp_path / "main" / "lora-adapter" / "adapter_model.safetensors")
    assert len(adapter) == len(expected["adapter"]) == 2 * 2 * 2  # A and B, q and v, 2 layers
    assert sorted(v.shape for v in adapter.values()) == sorted(v.shape for v in expected["adapter"].values())
    assert sorted(float(v.sum()) for v in adapter.values()) == pytest.approx(
        sorted(float(v.sum()) for v in expected["adapter"].values()))


FSDP_CHECKPOINT = """
import sys, torch
from pathlib import Path
from align import distributed
distributed.state()
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from transformers import LlamaConfig, LlamaForCausalLM
from align.rl.checkpoint import Checkpoints
out = Path(sys.argv[1])
mesh = init_device_mesh("cpu", (2,))
ids = torch.tensor([[1, 2, 3, 4, 5, 6]])

def build():
    torch.manual_seed(0)
    m = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, tie_word_embeddings=False))
    for layer in m.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(m, mesh=mesh)
    return m, torch.optim.AdamW(m.parameters(), lr=1e-2)

def step(m, opt):
    loss = m(input_ids=ids, labels=ids).loss
    loss.backward(); opt.step(); opt.zero_grad()
    return loss.item()

m, opt = build()
step(m, opt); step(m, opt)
ckpts = Checkpoints(out, "fp")
ckpts.save(2, {"policy": m}, {"policy": (opt, None)}, {"note": "x"})
distributed.barrier()
after = [step(m, opt) for _ in range(2)]          # the run goes on
m2, opt2 = build()                                 # a new process set resumes
last = ckpts.latest()
last.load_model("policy", m2)
last.load_optimizer("policy", opt2, None, model=m2)
resumed = [step(m2, opt2) for _ in range(2)]
assert last.iteration == 2 and after == resumed, (after, resumed)
print("rank", distributed.world()[0], "resumed equal", after, flush=True)
"""


def test_a_checkpoint_of_an_fsdp_sharded_model_resumes_exactly(tmp_path):
    # PPO's checkpoints (align.rl.checkpoint) of a policy FSDP shards: gathered to full files by the main process,
    # loaded back into each process's shards; two more steps after resuming equal two more steps without stopping
    from safetensors.torch import load_file

    script = tmp_path / "ckpt.py"
    script.write_text(FSDP_CHECKPOINT)
    launched = _launch(str(script), str(tmp_path / "ckpts"), env={"PYTHONPATH": str(ROOT)})
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert launched.stdout.count("resumed equal") == 2
    saved = load_file(tmp_path / "ckpts" / "it-000002" / "policy.safetensors")
    assert saved["lm_head.weight"].shape == (50, 32)  # whole, not one process's half
