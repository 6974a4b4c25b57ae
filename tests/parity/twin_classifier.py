"""The PyTorch twin of fmtrain's eval classifier (src/models/classifier.c), NCHW.

An nn.Sequential `features` (conv3x3 + GroupNorm + SiLU four times, the last
three with stride 2) and a Linear `head` on the last map flattened in NHWC
order; the features are that map's global average. Its state_dict is exactly
fmtrain's parameter table.
"""
import torch.nn.functional as F
from torch import nn


class Classifier(nn.Module):
    def __init__(self, in_ch=1, width=32, num_classes=10, groups=8, size=32):
        super().__init__()
        chans = [width, 2 * width, 4 * width, 4 * width]
        layers, cin, side = [], in_ch, size
        for k, c in enumerate(chans):
            layers += [nn.Conv2d(cin, c, 3, stride=1 if k == 0 else 2, padding=1),
                       nn.GroupNorm(min(groups, c), c, eps=1e-5), nn.SiLU()]
            cin, side = c, side if k == 0 else (side - 1) // 2 + 1
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(cin * side * side, num_classes)

    def forward(self, x):
        """Returns (logits, features); features (the pooled last map) are the
        Frechet features; the head reads the map flattened in NHWC order."""
        h = self.features(x)
        return self.head(h.permute(0, 2, 3, 1).flatten(1)), h.mean((2, 3))

    def loss(self, x, labels):
        logits, f = self(x)
        return F.cross_entropy(logits, labels), logits, f
