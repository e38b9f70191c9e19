"""Helpers of the parity tests against Hugging Face transformers (PyTorch, CPU): test-only."""

import torch


def noised(model, seed):
    """``model`` in eval mode with noise on every parameter (LayerNorm gains 1 + noise), so no
    weight sits at its initial value and a converter that drops or swaps one shows up."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = 0.1 * torch.randn(param.shape, generator=generator)
            if "LayerNorm.weight" in name or "layer_norm.weight" in name:
                param.copy_(1.0 + noise)
            else:
                param.copy_(noise)
    return model.eval()
