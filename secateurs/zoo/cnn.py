"""Small convolutional networks for 32×32 images: VGG, ResNet-20 and MobileNetV2.

Each is plain ``torch.nn`` layers with shapes fixed by the constructor, so
``torch.fx.symbolic_trace`` traces it: no control flow on tensor values and no
in-place operations. Residual connections are written ``out + identity`` so the
traced graph shows the ``add`` that couples the channels of both branches.

Example:
    >>> from secateurs import zoo
    >>> net = zoo.model("resnet-20")
    >>> net(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from ..errors import PruningError
from .models import _register


def image_input(args: dict[str, Any]) -> tuple[int, ...]:
    """The example input of an image model: ``(1, in_channels, image_size, image_size)``."""
    return (1, int(args["in_channels"]), int(args["image_size"]), int(args["image_size"]))


def _check_positive(model: str, **values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise PruningError(f"{model} {name} must be a positive integer, got {value!r}")


def _he_init(net: nn.Module) -> nn.Module:
    """He et al. (2015) normal initialisation for convolutions, as their ResNet paper uses."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return net


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout)]


# ---------------------------------------------------------------- VGG


class VGG(nn.Module):
    """A small VGG-style network (Simonyan & Zisserman, 2015, "Very Deep Convolutional
    Networks for Large-Scale Image Recognition").

    Layers are ``features.<i>`` (per width: conv-BN-ReLU twice, then max-pool),
    ``flatten`` and ``classifier.0`` / ``classifier.2`` (the two Linear layers), so
    the convolution → flatten → linear boundary sits between ``features`` and
    ``classifier``.
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: int, widths: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for w in widths:
            layers += [nn.Conv2d(cin, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(),
                       nn.Conv2d(w, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2)]
            cin = w
        side = image_size >> len(widths)  # each max-pool halves the side, rounding down
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(nn.Linear(cin * side * side, 256), nn.ReLU(), nn.Linear(256, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.flatten(self.features(x)))


@_register("vgg", image_input)
def vgg(in_channels: int = 3, num_classes: int = 10, image_size: int = 32,
        widths: Sequence[int] = (32, 64, 128)) -> nn.Module:
    """A small VGG (Simonyan & Zisserman, 2015) for 32×32 images.

    Args:
        in_channels: channels of the input images.
        num_classes: number of logits.
        image_size: side of the square input images.
        widths: channels of each stage; each stage is two 3×3 conv-BN-ReLU and a 2×2 max-pool.

    Raises:
        PruningError: non-positive sizes, or images too small for ``len(widths)`` poolings.
    """
    if (isinstance(widths, str) or not isinstance(widths, Sequence) or not widths
            or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths)):
        raise PruningError(f"vgg widths must be a non-empty list of positive integers, got {widths!r}")
    _check_positive("vgg", in_channels=in_channels, num_classes=num_classes, image_size=image_size)
    if image_size >> len(widths) < 1:
        raise PruningError(
            f"vgg with {len(widths)} stages needs image_size >= {2 ** len(widths)}, got image_size={image_size}"
        )
    return _he_init(VGG(in_channels, num_classes, image_size, widths))


# ---------------------------------------------------------------- ResNet-20


class BasicBlock(nn.Module):
    """conv3×3-BN-ReLU-conv3×3-BN plus a shortcut, then ReLU (He et al., 2016).

    The shortcut is ``shortcut.conv`` / ``shortcut.bn`` (1×1 conv with stride, option B)
    when the block changes the shape, and the identity (``shortcut`` is ``None``) otherwise.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(cin, cout, 3, stride)
        self.relu1 = nn.ReLU()
        self.conv2, self.bn2 = _conv_bn(cout, cout, 3)
        self.shortcut: nn.Sequential | None = None
        if stride != 1 or cin != cout:
            conv, bn = _conv_bn(cin, cout, 1, stride)
            self.shortcut = nn.Sequential(OrderedDict(conv=conv, bn=bn))
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + identity)


class ResNet(nn.Module):
    """CIFAR ResNet (He et al., 2016): stem, three stages of BasicBlocks, pooled linear head.

    Layers are ``conv1`` / ``bn1`` (stem), ``layer1`` … ``layer3`` (each a sequence of
    :class:`BasicBlock`, so ``layer2.0.conv1``), ``avgpool``, ``flatten`` and ``fc``.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int, blocks_per_stage: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(in_channels, width, 3)
        self.relu = nn.ReLU()
        cin = width
        for i, cout in enumerate((width, 2 * width, 4 * width), start=1):
            strides = [1 if i == 1 else 2] + [1] * (blocks_per_stage - 1)
            blocks = []
            for stride in strides:
                blocks.append(BasicBlock(cin, cout, stride))
                cin = cout
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.avgpool(x)))


@_register("resnet-20", image_input)
def resnet_20(in_channels: int = 3, num_classes: int = 10, width: int = 16, image_size: int = 32) -> nn.Module:
    """ResNet-20 for CIFAR-10 (He et al., 2016, "Deep Residual Learning for Image Recognition").

    Three stages of three BasicBlocks with ``width``, ``2·width`` and ``4·width``
    channels (16/32/64 by default, about 0.27M parameters); the first block of
    stages 2 and 3 halves the resolution and uses a 1×1-conv projection shortcut.

    Args:
        in_channels: channels of the input images.
        num_classes: number of logits.
        width: channels of the first stage.
        image_size: side of the example input only; any size of at least 4 works.

    Raises:
        PruningError: non-positive sizes.
    """
    _check_positive("resnet-20", in_channels=in_channels, num_classes=num_classes, width=width,
                    image_size=image_size)
    return _he_init(ResNet(in_channels, num_classes, width, blocks_per_stage=3))


# ---------------------------------------------------------------- MobileNetV2


class InvertedResidual(nn.Module):
    """MobileNetV2 block (Sandler et al., 2018): expand 1×1 → depthwise 3×3 → project 1×1.

    Layers are ``expand`` / ``bn1`` / ``act1``, ``depthwise`` / ``bn2`` / ``act2`` (a
    convolution with ``groups`` equal to its channels) and ``project`` / ``bn3`` (linear
    bottleneck, no activation). The input is added back when the shapes allow it.
    """

    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.expand, self.bn1 = _conv_bn(cin, hidden, 1)
        self.act1 = nn.ReLU6()
        self.depthwise, self.bn2 = _conv_bn(hidden, hidden, 3, stride, groups=hidden)
        self.act2 = nn.ReLU6()
        self.project, self.bn3 = _conv_bn(hidden, cout, 1)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.expand(x)))
        out = self.act2(self.bn2(self.depthwise(out)))
        out = self.bn3(self.project(out))
        return out + x if self.residual else out


class MobileNetV2(nn.Module):
    """A small MobileNetV2 (Sandler et al., 2018).

    Layers are ``stem.conv`` / ``stem.bn`` / ``stem.act``, ``blocks.<i>`` (each an
    :class:`InvertedResidual`, so ``blocks.1.depthwise``), ``head.conv`` / ``head.bn`` /
    ``head.act``, ``avgpool``, ``flatten`` and ``fc``.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int, expansion: int = 4) -> None:
        super().__init__()
        w1, w2, w3 = width, round(1.5 * width), 2 * width
        config = [(w1, w1, 1), (w1, w2, 2), (w2, w2, 1), (w2, w3, 2), (w3, w3, 1)]
        self.stem = nn.Sequential(OrderedDict(zip(("conv", "bn"), _conv_bn(in_channels, w1, 3)), act=nn.ReLU6()))
        self.blocks = nn.Sequential(*(InvertedResidual(a, b, s, expansion) for a, b, s in config))
        self.head = nn.Sequential(OrderedDict(zip(("conv", "bn"), _conv_bn(w3, 8 * width, 1)), act=nn.ReLU6()))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(8 * width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.fc(self.flatten(self.avgpool(x)))


@_register("mobilenet-v2", image_input)
def mobilenet_v2(in_channels: int = 3, num_classes: int = 10, width: int = 16, image_size: int = 32) -> nn.Module:
    """A small MobileNetV2 (Sandler et al., 2018, "MobileNetV2: Inverted Residuals and Linear
    Bottlenecks") for 32×32 images.

    A stride-1 stem, five inverted-residual blocks (``width`` → ``width`` → ``1.5·width``
    → ``1.5·width`` → ``2·width`` → ``2·width`` channels, expansion 4, two of them with
    stride 2), then a 1×1 conv to ``8·width`` channels, average pooling and a Linear.
    The depthwise convolutions (``groups`` = channels) are what sets it apart.

    Args:
        in_channels: channels of the input images.
        num_classes: number of logits.
        width: channels of the stem and first block.
        image_size: side of the example input only; any size of at least 4 works.

    Raises:
        PruningError: non-positive sizes.
    """
    _check_positive("mobilenet-v2", in_channels=in_channels, num_classes=num_classes, width=width,
                    image_size=image_size)
    return _he_init(MobileNetV2(in_channels, num_classes, width))
