"""torch.compile of a diffusion transformer: the whole model, or each repeated block (regional compilation).

Compiling the blocks one by one gives dynamo one block's code to trace and reuses it for every block of the
same class (the weights are graph inputs), so a 57-block FLUX compiles in roughly the time of one block of
each kind; a whole-model compile traces every block. The per-step code between blocks (embeddings, norms,
the final projection) then runs eager.
"""

from __future__ import annotations

from typing import Literal

from torch import nn

CompileScope = Literal["full", "blocks"]
BLOCK_LISTS = ("transformer_blocks", "single_transformer_blocks")  # SD3 / SANA, and FLUX's two kinds


def compile_model(model: nn.Module, scope: CompileScope = "full", mode: str | None = None,
                  dynamic: bool | None = None) -> int:
    """Compile ``model`` in place (state-dict keys unchanged); returns how many modules were compiled.

    ``dynamic=False`` keeps shapes static: a second batch size gets its own graph instead of a dynamic one."""
    if scope == "full":
        model.compile(mode=mode, dynamic=dynamic)
        return 1
    if scope != "blocks":
        raise ValueError(f"compile scope must be full or blocks, got {scope!r}")
    blocks = [block for name in BLOCK_LISTS for block in getattr(model, name, ())]
    if not blocks:
        raise ValueError(f"{type(model).__name__} has none of {', '.join(BLOCK_LISTS)}: use compile scope full")
    for block in blocks:
        block.compile(mode=mode, dynamic=dynamic)
    return len(blocks)
