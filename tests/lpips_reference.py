"""Hand-written PyTorch copies of the official LPIPS v0.1 forward (not a test file).

`lpips.LPIPS(net=..., version='0.1')` forward with `normalize=False` (lpips 0.1.4:
ScalingLayer, torchvision trunk features sliced at five ReLUs, normalize_tensor,
NetLinLayer = Sequential(Dropout, Conv2d(C, 1, 1, bias=False)) in eval mode,
spatial_average, sum), written from torch primitives because torchvision does not
import beside the CPU torch build used here (and `lpips` imports torchvision).
Trunks are built with torchvision's `features` indexing, so their state dicts have
torchvision's keys; widths are configurable for the VGG trunk (tests use narrow ones).
"""
import torch

nn = torch.nn

# torchvision `features` slices LPIPS takes its five maps from (lpips/pretrained_networks.py).
SLICES = {
    'alex': ((0, 2), (2, 5), (5, 8), (8, 10), (10, 12)),
    'vgg': ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30))
}
VGG16_WIDTHS = (64, 128, 256, 512, 512)


class TorchScalingLayer(nn.Module):

  def __init__(self):
    super().__init__()
    self.register_buffer('shift', torch.Tensor([-.030, -.088, -.188])[None, :, None, None])
    self.register_buffer('scale', torch.Tensor([.458, .448, .450])[None, :, None, None])

  def forward(self, x):
    return (x - self.shift) / self.scale


def torchvision_alexnet_features():
  """torchvision.models.alexnet().features, same indices."""
  return nn.Sequential(
      nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
      nn.ReLU(inplace=True),
      nn.MaxPool2d(kernel_size=3, stride=2),
      nn.Conv2d(64, 192, kernel_size=5, padding=2),
      nn.ReLU(inplace=True),
      nn.MaxPool2d(kernel_size=3, stride=2),
      nn.Conv2d(192, 384, kernel_size=3, padding=1),
      nn.ReLU(inplace=True),
      nn.Conv2d(384, 256, kernel_size=3, padding=1),
      nn.ReLU(inplace=True),
      nn.Conv2d(256, 256, kernel_size=3, padding=1),
      nn.ReLU(inplace=True),
      nn.MaxPool2d(kernel_size=3, stride=2),
  )


def torchvision_vgg16_features(widths=VGG16_WIDTHS):
  """torchvision.models.vgg16().features (config "D"), same indices, block widths ``widths``."""
  layers, c = [], 3
  for width, convs in zip(widths, (2, 2, 3, 3, 3)):
    for _ in range(convs):
      layers += [nn.Conv2d(c, width, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
      c = width
    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
  return nn.Sequential(*layers)


class TorchLPIPS(nn.Module):
  """Official LPIPS forward (v0.1, lpips=True, spatial=False) for net 'alex' or 'vgg'."""

  def __init__(self, net='alex', widths=VGG16_WIDTHS):
    super().__init__()
    self.scaling_layer = TorchScalingLayer()
    if net == 'alex':
      self.features = torchvision_alexnet_features()
      self.chns = [64, 192, 384, 256, 256]
    else:
      self.features = torchvision_vgg16_features(widths)
      self.chns = list(widths)
    self.slices = SLICES[net]
    self.lins = nn.ModuleList([
        nn.Sequential(nn.Dropout(), nn.Conv2d(c, 1, 1, stride=1, padding=0, bias=False))
        for c in self.chns
    ])

  def net(self, x):
    outs = []
    for start, stop in self.slices:
      for i in range(start, stop):
        x = self.features[i](x)
      outs.append(x)
    return outs

  @staticmethod
  def normalize_tensor(x, eps=1e-10):
    norm_factor = torch.sqrt(torch.sum(x ** 2, dim=1, keepdim=True))
    return x / (norm_factor + eps)

  def forward(self, in0, in1, per_layer=False):
    outs0 = self.net(self.scaling_layer(in0))
    outs1 = self.net(self.scaling_layer(in1))
    res = []
    for kk in range(len(self.chns)):
      diff = (self.normalize_tensor(outs0[kk]) - self.normalize_tensor(outs1[kk])) ** 2
      res.append(self.lins[kk](diff).mean([2, 3], keepdim=True))
    val = 0
    for r in res:
      val = val + r
    return (val, res) if per_layer else val

  def state_dicts(self):
    """(torchvision trunk state dict, official LPIPS lin state dict)."""
    trunk = {f'features.{k}': v for k, v in self.features.state_dict().items()}
    lin = {f'lin{i}.model.1.weight': l[1].weight.detach().clone() for i, l in enumerate(self.lins)}
    return trunk, lin


def random_lpips(net='alex', widths=VGG16_WIDTHS, seed=0):
  """A TorchLPIPS in eval mode with random weights: default init, except random biases
  and non-negative lin weights like the official ones."""
  torch.manual_seed(seed)
  model = TorchLPIPS(net, widths)
  with torch.no_grad():
    for m in model.features:
      if isinstance(m, nn.Conv2d) and net == 'vgg':
        nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
        nn.init.normal_(m.bias, 0.0, 0.1)
    for lin in model.lins:
      lin[1].weight.uniform_(0.0, 1.0)
  return model.eval()


def torch_lpips(model, a, b, per_layer=False):
  """model on NHWC float numpy images -> numpy [B] (and per-layer [B] terms)."""
  with torch.no_grad():
    out = model(
        torch.from_numpy(a).permute(0, 3, 1, 2),
        torch.from_numpy(b).permute(0, 3, 1, 2), per_layer=True)
  total = out[0].reshape(-1).numpy()
  if per_layer:
    return total, [r.reshape(-1).numpy() for r in out[1]]
  return total
