"""Running the same computation under several intra-op thread counts."""
from typing import Callable, List, Sequence

import torch


def per_thread_count(fn: Callable[[], Sequence[torch.Tensor]],
                     counts: Sequence[int] = (1, 2, 3)) -> List[Sequence[torch.Tensor]]:
    """``fn()``'s tensors with ``torch.set_num_threads(t)`` for each t in ``counts``, in that
    order; the thread count is restored afterwards, also when ``fn`` raises."""
    saved = torch.get_num_threads()
    try:
        results = []
        for t in counts:
            torch.set_num_threads(t)
            results.append(fn())
        return results
    finally:
        torch.set_num_threads(saved)
