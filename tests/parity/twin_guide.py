"""The PyTorch twin of fmtrain's guide classifier (src/models/guide.c), NCHW.

The sinusoidal embedding of t (scale 1000, frequencies exp(-ln(1e4) i / half),
[cos | sin], computed in double like src/nn/embed.c) is broadcast over the
latent's positions and concatenated after its channels; the eval classifier's
twin (twin_classifier.Classifier) maps that to logits. Its state_dict is
exactly fmtrain's parameter table.
"""
import math

import torch
from torch import nn

from twin_classifier import Classifier


class Guide(nn.Module):
    def __init__(self, channels, width, time_dim, num_classes, groups, size):
        super().__init__()
        self.time_dim = time_dim
        self.cnn = Classifier(channels + time_dim, width, num_classes, groups, size)

    def state_dict(self, *a, **k):
        return self.cnn.state_dict(*a, **k)

    def load_state_dict(self, sd, strict=True):
        return self.cnn.load_state_dict(sd, strict=strict)

    def named_parameters(self, *a, **k):
        return self.cnn.named_parameters(*a, **k)

    def embed(self, t):
        half = self.time_dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / half)
        arg = t.double()[:, None] * 1000.0 * freqs[None, :]
        return torch.cat([torch.cos(arg), torch.sin(arg)], 1).float()

    def forward(self, x, t):
        """x [B, C, S, S], t [B] -> logits [B, classes]."""
        e = self.embed(t)[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
        return self.cnn(torch.cat([x, e], 1))[0]
