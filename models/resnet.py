"""ResNets for the Lookahead experiments, built from torchvision's implementation.

* ``cifar_resnet18``: the CIFAR ResNet-18 the Lookahead paper used (He et al. 2016 blocks as in the
  widely used kuangliu/pytorch-cifar model): a 3x3 stride-1 stem with no max-pool, so the four
  stages see 32, 16, 8 and 4 pixels. torchvision's BasicBlock stages are identical; only the
  ImageNet stem (7x7 stride 2 + max-pool) is replaced.
* ``resnet50``: torchvision's ImageNet ResNet-50, randomly initialised.
"""
from __future__ import annotations

import torch.nn as nn
from torchvision.models import resnet18, resnet50


def cifar_resnet18(num_classes: int = 10) -> nn.Module:
    m = resnet18(weights=None, num_classes=num_classes)
    m.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(m.conv1.weight, mode="fan_out", nonlinearity="relu")
    m.maxpool = nn.Identity()
    return m


def imagenet_resnet50(num_classes: int = 1000) -> nn.Module:
    return resnet50(weights=None, num_classes=num_classes)


MODELS = {"cifar_resnet18": cifar_resnet18, "resnet50": imagenet_resnet50}


def build(name: str, num_classes: int) -> nn.Module:
    if name not in MODELS:
        raise ValueError(f"unknown classifier '{name}'; available: {', '.join(sorted(MODELS))}")
    return MODELS[name](num_classes)
