"""The PyTorch reference code of the tests, in one place (import it after
``pytest.importorskip("torch")``):

- torchvision's ResNet-18/50 (``torchvision/models/resnet.py``, v1.5: the stride of a
  Bottleneck sits on its 3×3 convolution) in plain PyTorch, with the same module names, so its
  ``state_dict`` keys and shapes are torchvision's. A reference for tests/nn/test_convert.py:
  torchvision's wheels cannot be imported beside the CPU PyTorch wheel used here.
- ``cmnist_released_loss``: the released Colored MNIST training losses (IRM, V-REx, the oracle,
  annealed SD) for tests/tasks/test_cmnist.py.

The PyTorch NarLeNet of the released CIFAR-2 protocol is ``benchmarks.cifar_speed.torch_narlenet``
(the benchmark's baseline; tests/nn/test_models.py compares against it)."""

import torch
from torch import nn


def conv3x3(c_in, c_out, stride=1):
  return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


def conv1x1(c_in, c_out, stride=1):
  return nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, inplanes, planes, stride=1, downsample=None):
    super().__init__()
    self.conv1 = conv3x3(inplanes, planes, stride)
    self.bn1 = nn.BatchNorm2d(planes)
    self.relu = nn.ReLU(inplace=True)
    self.conv2 = conv3x3(planes, planes)
    self.bn2 = nn.BatchNorm2d(planes)
    self.downsample = downsample

  def forward(self, x):
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return self.relu(out + identity)


class Bottleneck(nn.Module):
  expansion = 4

  def __init__(self, inplanes, planes, stride=1, downsample=None):
    super().__init__()
    self.conv1 = conv1x1(inplanes, planes)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = conv3x3(planes, planes, stride)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = conv1x1(planes, planes * self.expansion)
    self.bn3 = nn.BatchNorm2d(planes * self.expansion)
    self.relu = nn.ReLU(inplace=True)
    self.downsample = downsample

  def forward(self, x):
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    return self.relu(out + identity)


class ResNet(nn.Module):
  def __init__(self, block, layers, num_classes=1000):
    super().__init__()
    self.inplanes = 64
    self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    self.relu = nn.ReLU(inplace=True)
    self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    self.layer1 = self._make_layer(block, 64, layers[0])
    self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
    self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
    self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
    self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
    self.fc = nn.Linear(512 * block.expansion, num_classes)
    for m in self.modules():
      if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
      elif isinstance(m, nn.BatchNorm2d):
        nn.init.constant_(m.weight, 1)
        nn.init.constant_(m.bias, 0)

  def _make_layer(self, block, planes, blocks, stride=1):
    downsample = None
    if stride != 1 or self.inplanes != planes * block.expansion:
      downsample = nn.Sequential(
        conv1x1(self.inplanes, planes * block.expansion, stride),
        nn.BatchNorm2d(planes * block.expansion),
      )
    layers = [block(self.inplanes, planes, stride, downsample)]
    self.inplanes = planes * block.expansion
    layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)

  def features(self, x):
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
    return torch.flatten(self.avgpool(x), 1)

  def forward(self, x):
    return self.fc(self.features(x))


def resnet18(num_classes=1000):
  return ResNet(BasicBlock, [2, 2, 2, 2], num_classes)


def resnet50(num_classes=1000):
  return ResNet(Bottleneck, [3, 4, 6, 3], num_classes)


# ----------------------------------------------------------------------------- Colored MNIST


def cmnist_released_loss(tw, x, y, env, method, step, hp):
  """The released losses of a ReLU MLP with weights ``tw`` = [(W, b), …] (PyTorch layout) on
  ``x``, binary labels ``y`` and environments ``env`` ∈ {0, 1} at training step ``step``."""
  h = x
  for i, (w, b) in enumerate(tw):
    h = h @ w.T + b
    if i < len(tw) - 1:
      h = torch.relu(h)
  logits = h[:, 0]
  bce = torch.nn.functional.binary_cross_entropy_with_logits
  if method == "sd":
    nll = bce(logits, y)
    sd = (logits**2).mean()
    return (
      hp["sd_lambda"] * (sd + nll) if step >= hp["anneal_steps"] else nll + hp["sd_lambda"] * sd
    )
  nlls, pens = [], []
  for e in (0, 1):
    m = env == e
    scale = torch.tensor(1.0, dtype=logits.dtype, requires_grad=True)
    loss_e = bce(logits[m] * scale, y[m])
    g = torch.autograd.grad(loss_e, [scale], create_graph=True)[0]
    nlls.append(bce(logits[m], y[m]))
    pens.append(torch.sum(g**2))
  weight_norm = sum(p.norm().pow(2) for pair in tw for p in pair)
  pw = hp["penalty_weight"] if step >= hp["anneal_steps"] else 1.0
  if method in ("irm", "oracle"):  # the oracle is IRM's main.py with penalty weight 0
    loss = torch.stack(nlls).mean() + hp["l2_weight"] * weight_norm + pw * torch.stack(pens).mean()
  else:  # REx release: (R0 + R1) + l2 + w (R0 - R1)^2
    loss = nlls[0] + nlls[1] + hp["l2_weight"] * weight_norm + pw * (nlls[0] - nlls[1]) ** 2
  return loss / pw if pw > 1.0 else loss
