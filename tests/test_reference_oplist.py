"""The reference implementation runs every decoding method on the package's kernels, and the kernels it
launches, with their shapes, FLOPs and bytes, are exactly the ops the workload builder lists for the same
scenario (pass by pass of the exact schedule), with no torch work outside those kernels."""
from __future__ import annotations

import pytest
import torch

from perfmodel.reference import Recorder, Reference
from perfmodel.reference.oplist import compare
from perfmodel.specs.model import Model
from perfmodel.specs.scenario import load_scenario

GQA = Model(name="tiny-gqa", hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=256, vocab_size=500)
MHA = Model(name="tiny-mha", hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
            intermediate_size=256, vocab_size=500, attention_mask="bidirectional")
QWEN = Model(name="tiny-qwen", hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
             intermediate_size=256, vocab_size=500, qkv_bias=True, qk_norm=True, tie_word_embeddings=True)

SHORT = {"prompt_len": 24, "gen_len": 8}
BLOCKS = {"prompt_len": 24, "gen_len": 16, "block_size": 8}
KIVI = {"prompt_len": 24, "gen_len": 20, "kv_cache.group_size": 16, "kv_cache.residual_window": 8}

CASES = {
    "arm": (GQA, "arm", SHORT),
    "arm-batch-2-qwen": (QWEN, "arm", {**SHORT, "batch": 2}),
    "dlm": (MHA, "dlm", {**SHORT, "steps": 4}),
    "dlm-semi-ar": (MHA, "dlm", {**BLOCKS, "steps": 4, "semi_autoregressive": True}),
    "dlm-semi-ar-truncated": (MHA, "dlm", {**BLOCKS, "steps": 4, "semi_autoregressive": True,
                                            "truncate_suffix": True}),
    "block-dlm": (MHA, "block-dlm", {**BLOCKS, "steps_per_block": 2, "batch": 2}),
    "fast-dllm-prefix": (MHA, "fast-dllm-prefix", {**BLOCKS, "steps_per_block": 3}),
    "fast-dllm-dual": (MHA, "fast-dllm-dual", {**BLOCKS, "steps_per_block": 3}),
    "kv-int8": (GQA, "kv-int8", KIVI),
    "kv-int4": (GQA, "kv-int4", {**KIVI, "batch": 2}),
    "xquant-svd-fused": (GQA, "xquant", {**SHORT, "kv_cache.group_size": 32}),
    "xquant-svd-unfused": (GQA, "xquant", {**SHORT, "kv_cache.group_size": 32, "kv_cache.remat": "unfused",
                                            "batch": 2}),
    "xquant-x-fused": (MHA, "xquant", SHORT),
    "xquant-x-unfused": (MHA, "xquant", {**SHORT, "kv_cache.remat": "unfused"}),
    "xquant-cl-fused": (GQA, "xquant-cl", {**SHORT, "batch": 2}),
    "xquant-cl-unfused": (GQA, "xquant-cl", {**SHORT, "kv_cache.remat": "unfused"}),
    "squeezed-attention": (GQA, "squeezed-attention", {**SHORT, "attention.centroid_ratio": 0.2}),
    "multipole-attention": (GQA, "multipole-attention", {**SHORT, "attention.centroid_ratio": 0.2, "batch": 2}),
}


def record(model, scenario, overrides):
    ref = Reference(model, load_scenario(scenario, overrides))
    with Recorder(strict=True) as rec:
        result = ref.run()
    return ref, rec, result


@pytest.mark.parametrize("case", sorted(CASES))
def test_reference_launches_are_the_builders_ops(case):
    model, scenario, overrides = CASES[case]
    ref, rec, result = record(model, scenario, overrides)
    problems = compare(rec.by_pass(), ref.structure, ref.params, ref.passes)
    assert problems == [], "\n".join(problems[:20])
    assert rec.outside == [], f"torch work outside any kernel: {sorted(set(rec.outside))}"
    assert set(rec.untracked_ops) <= {"run setup", "decoding policy", "offline clustering"}
    # The run produced an answer: no mask token is left in it, and every pass instance was timed.
    ids = result.ids[:, :ref.params.prompt_len + ref.params.gen_len]
    assert not (ids == model.vocab_size - 1).any()
    assert len(result.times) == sum(int(ps.count) for ps in ref.passes)


def test_the_comparison_catches_a_different_schedule():
    ref, rec, _ = record(GQA, "arm", SHORT)
    other = Reference(GQA, load_scenario("arm", {**SHORT, "prompt_len": 25}))
    problems = compare(rec.by_pass(), other.structure, other.params, other.passes)
    assert any("layer.qkv_proj" in p and "shape.m" in p for p in problems)
    xq = {**SHORT, "kv_cache.group_size": 32}
    fused = Reference(GQA, load_scenario("xquant", xq))
    _, unfused_rec, _ = record(GQA, "xquant", {**xq, "kv_cache.remat": "unfused"})
    problems = compare(unfused_rec.by_pass(), fused.structure, fused.params, fused.passes)
    assert any("'layer.kv_append'" in p and "not in the builder's ops" in p for p in problems)
    assert any("layer.xquant_remat: write_bytes" in p for p in problems)


def test_strict_recording_lists_torch_work_outside_the_kernels():
    from perfmodel.kernels.gemm import linear

    x, w = torch.randn(3, 8), torch.randn(4, 8)
    with Recorder(strict=True) as rec:
        y = linear(x, w)
        (y * 2).sum()  # two operations no kernel wrapper accounts for
    assert [launch.op.kind for launch in rec.launches] == ["gemm"]
    assert rec.outside == ["mul", "sum"]


@pytest.mark.parametrize("field,value,message", [
    ("kv_cache.format", "fp8", "kv_cache.format 'fp8'"),
    ("tensor_parallel", 2, "tensor_parallel 2"),
    ("weight_dtype", "int4", "weight_dtype 'int4'"),
    ("attention.hierarchical", True, "attention.hierarchical True"),
])
def test_unsupported_scenarios_are_clear_errors(field, value, message):
    scenario = "squeezed-attention" if field.startswith("attention") else "arm"
    with pytest.raises(ValueError, match=message):
        Reference(GQA, load_scenario(scenario, {**SHORT, field: value}))
    with pytest.raises(ValueError, match="gen_len 12: the reference runs whole blocks"):
        Reference(MHA, load_scenario("block-dlm", {**BLOCKS, "gen_len": 12}))


_no_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (compiled Triton kernels)")


@pytest.mark.cuda
@_no_cuda
@pytest.mark.parametrize("case", sorted(CASES))
def test_on_cuda_the_triton_kernels_launch_the_same_ops(case):
    # On CUDA every attention, sampling and cache-write kernel is compiled Triton; the op list must not change.
    model, scenario, overrides = CASES[case]
    ref = Reference(model, load_scenario(scenario, overrides), device="cuda")
    with Recorder() as rec:
        result = ref.run()
    problems = compare(rec.by_pass(), ref.structure, ref.params, ref.passes)
    assert problems == [], "\n".join(problems[:20])
    ids = result.ids[:, :ref.params.prompt_len + ref.params.gen_len]
    assert not (ids == model.vocab_size - 1).any()
    if ref.replayable:
        graphed = ref.run(graph_replays=3)
        assert len(graphed.times) == len(result.times) and all(t.seconds > 0 for t in graphed.times)
        assert not (graphed.ids[:, :ids.shape[1]] == model.vocab_size - 1).any()
