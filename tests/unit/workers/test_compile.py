"""Regional compilation: every repeated block of each family is wrapped, and nothing else."""

from __future__ import annotations

import pytest
import torch
from diffusers import FluxTransformer2DModel, SanaTransformer2DModel, SD3Transformer2DModel

from workers.compile import compile_model

# Transformers only (no text encoders or VAE): the structure is checked, and one static compile runs.
TRANSFORMERS = {
    "sd3": lambda: SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=2,
                                         attention_head_dim=8, num_attention_heads=2, joint_attention_dim=16,
                                         caption_projection_dim=16, pooled_projection_dim=16, pos_embed_max_size=8),
    "flux": lambda: FluxTransformer2DModel(patch_size=1, in_channels=4, out_channels=4, num_layers=1,
                                           num_single_layers=2, attention_head_dim=16, num_attention_heads=2,
                                           joint_attention_dim=16, pooled_projection_dim=16, axes_dims_rope=(4, 6, 6)),
    "sana": lambda: SanaTransformer2DModel(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8,
                                           num_layers=2, num_cross_attention_heads=2, cross_attention_head_dim=8,
                                           cross_attention_dim=16, caption_channels=16, sample_size=8, patch_size=1),
}


@pytest.mark.parametrize("family", ["sd3", "flux", "sana"])
def test_blocks_scope_compiles_each_transformer_block(family):
    transformer = TRANSFORMERS[family]()
    blocks = [*getattr(transformer, "transformer_blocks", ()), *getattr(transformer, "single_transformer_blocks", ())]
    assert compile_model(transformer, "blocks") == len(blocks) > 0
    assert all(b._compiled_call_impl is not None for b in blocks)
    assert transformer._compiled_call_impl is None  # the model itself stays eager between blocks
    keys = set(transformer.state_dict())
    assert not any("_orig_mod" in k for k in keys)  # in place: weight refreshes keep their keys


def test_full_scope_and_bad_scope():
    transformer = TRANSFORMERS["sd3"]()
    assert compile_model(transformer, "full") == 1 and transformer._compiled_call_impl is not None
    with pytest.raises(ValueError, match="full or blocks"):
        compile_model(transformer, "layers")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="use compile scope full"):
        compile_model(transformer.pos_embed, "blocks")


def test_static_blocks_match_eager_per_batch_size():
    """dynamic=False, as the iteration bench compiles its copies: each batch size gets its own static graph, and the
    compiled blocks give the eager model's output at each."""
    torch.manual_seed(0)
    eager = TRANSFORMERS["sd3"]().eval()
    compiled = TRANSFORMERS["sd3"]().eval()
    compiled.load_state_dict(eager.state_dict())
    compile_model(compiled, "blocks", dynamic=False)
    torch._dynamo.reset()
    graphs = []
    for batch in (2, 3, 4):
        inputs = {"hidden_states": torch.randn(batch, 4, 8, 8), "encoder_hidden_states": torch.randn(batch, 4, 16),
                  "pooled_projections": torch.randn(batch, 16), "timestep": torch.full((batch,), 500.0)}
        with torch.no_grad():
            want = eager(**inputs).sample
            got = compiled(**inputs).sample
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        graphs.append(torch._dynamo.utils.counters["stats"]["unique_graphs"])
    # static: the third batch size compiles graphs of its own (a dynamic graph from the second would serve it)
    assert graphs[0] < graphs[1] < graphs[2]
