"""nn.utils: gradient clipping under the names PyTorch users look for."""

from ..optim.clip import clip_grad_norm_, clip_grad_value_

__all__ = ["clip_grad_norm_", "clip_grad_value_"]
