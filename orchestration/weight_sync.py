"""Full-weight broadcast from learner rank 0 to every sampling actor through a collective group.

LoRA deltas are small and travel through Ray's object store. Full weights (``lora.enabled:
false``) are the size of the model, so they go through a dedicated torch.distributed process group
(NCCL on GPU, gloo on CPU): rank 0 is the learner's leader, ranks 1.. the sampling actors. The
group is independent of the learners' data-parallel group (its own TCPStore), so both coexist in
one process. Only tensors travel through it; the (small) key/shape/dtype manifest goes through the
object store first, so receivers allocate exactly what the sender sends.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

GROUP_TIMEOUT = timedelta(minutes=5)


@dataclass(frozen=True)
class Manifest:
    version: int
    entries: tuple[tuple[str, tuple[int, ...], str], ...]  # (key, shape, dtype name)


class SyncGroup:
    """One member of the broadcast group."""

    def __init__(self, host: str, port: int, rank: int, world_size: int, device: str) -> None:
        store = dist.TCPStore(host, port, world_size, is_master=(rank == 0), timeout=GROUP_TIMEOUT)
        self.device = torch.device(device)
        if self.device.type == "cuda":
            self.group = dist.ProcessGroupNCCL(store, rank, world_size)
        else:
            self.group = dist.ProcessGroupGloo(store, rank, world_size, GROUP_TIMEOUT)
        self.rank = rank

    def send(self, state: dict[str, torch.Tensor]) -> None:
        """Rank 0: broadcast every tensor of ``state`` in sorted-key order."""
        for key in sorted(state):
            tensor = state[key].to(self.device).contiguous()
            self.group.broadcast(tensor, 0).wait()

    def receive(self, manifest: Manifest) -> dict[str, torch.Tensor]:
        """Ranks > 0: receive the tensors the manifest announces (on CPU)."""
        out: dict[str, torch.Tensor] = {}
        for key, shape, dtype in manifest.entries:
            buffer = torch.empty(shape, dtype=getattr(torch, dtype), device=self.device)
            self.group.broadcast(buffer, 0).wait()
            out[key] = buffer.cpu() if self.device.type == "cuda" else buffer
        return out


def manifest_of(version: int, state: dict[str, torch.Tensor]) -> Manifest:
    return Manifest(version, tuple((k, tuple(state[k].shape), str(state[k].dtype).removeprefix("torch."))
                                   for k in sorted(state)))
