"""The pix2pix U-Net and PatchGAN of :mod:`bil_jax.models` as functional PyTorch.

Weights are dicts {name: tensor} (no ``nn.Module``), so that ``torch.func`` can
differentiate through them and an inner loop can replace them; layouts are PyTorch's
(conv kernels [O,I,kh,kw], transposed ones [I,O,kh,kw], images [B,C,H,W]). The U-Net has
4x4 stride-2 convolutions of min(ngf 2^i, 8 ngf) channels and instance norm with a
learnable scale and bias; the PatchGAN has 3 such layers. Used by
:mod:`bil_jax.bench.torch_ref`. Needs ``torch``, which bil_jax itself does not.
"""
import torch
import torch.nn.functional as F


def _level_width(ngf, i):
  return ngf * min(2 ** i, 8)


def unet_depth(size: int) -> int:
  """Levels of the U-Net for a square image of side ``size`` (a power of 2): log2(size)."""
  return int(size).bit_length() - 1


def init_generator(ngf, in_ch, depth, out_ch=3, gen=None):
  """The weights {name: tensor} of the pix2pix U-Net (bil_jax.models.pix2pix), drawn from
  ``gen``: conv kernels N(0, 0.02) [O,I,4,4] (transposed: [I,O,4,4]), norm scale 1, biases 0."""
  p = {}
  cin = in_ch
  for i in range(depth):
    with_norm = 0 < i < depth - 1
    c = _level_width(ngf, i)
    p[f"down_{i}.w"] = torch.randn(c, cin, 4, 4, generator=gen) * 0.02
    if with_norm:
      p[f"down_norm_{i}.s"] = torch.ones(c)
      p[f"down_norm_{i}.b"] = torch.zeros(c)
    else:
      p[f"down_{i}.b"] = torch.zeros(c)
    cin = c
  for i in reversed(range(depth)):
    cin_up = _level_width(ngf, i) * (1 if i == depth - 1 else 2)
    cout = out_ch if i == 0 else _level_width(ngf, i - 1)
    p[f"up_{i}.w"] = torch.randn(cin_up, cout, 4, 4, generator=gen) * 0.02
    if i == 0:
      p["up_0.b"] = torch.zeros(cout)
    else:
      p[f"up_norm_{i}.s"] = torch.ones(cout)
      p[f"up_norm_{i}.b"] = torch.zeros(cout)
  return p


def _inorm(x, s, b):
  return F.instance_norm(x, weight=s, bias=b, eps=1e-5)


def generator(p, x, depth, dropout=0.5, train=True):
  """x [B,Cin,H,W] -> [B,3,H,W]."""
  skips, h = [], x
  for i in range(depth):
    with_norm = 0 < i < depth - 1
    if i > 0:
      h = F.leaky_relu(h, 0.2)
    h = F.conv2d(h, p[f"down_{i}.w"], p.get(f"down_{i}.b"), stride=2, padding=1)
    if with_norm:
      h = _inorm(h, p[f"down_norm_{i}.s"], p[f"down_norm_{i}.b"])
    skips.append(h)
  for i in reversed(range(depth)):
    if i < depth - 1:
      h = torch.cat([skips[i], h], 1)
    h = F.relu(h)
    h = F.conv_transpose2d(h, p[f"up_{i}.w"], p.get(f"up_{i}.b"), stride=2, padding=1)
    if i == 0:
      return torch.tanh(h)
    h = _inorm(h, p[f"up_norm_{i}.s"], p[f"up_norm_{i}.b"])
    if dropout > 0 and 4 <= i <= depth - 2:
      h = F.dropout(h, dropout, training=train)
  raise AssertionError


def init_discriminator(ndf, in_ch, n_layers=3, gen=None):
  """The weights {name: tensor} of the PatchGAN (bil_jax.models.patchgan), drawn as
  :func:`init_generator` draws them."""
  p = {
      "conv_0.w": torch.randn(ndf, in_ch, 4, 4, generator=gen) * 0.02, "conv_0.b": torch.zeros(ndf)
  }
  cin = ndf
  for i in range(1, n_layers + 1):
    c = ndf * min(2 ** i, 8)
    p[f"conv_{i}.w"] = torch.randn(c, cin, 4, 4, generator=gen) * 0.02
    p[f"norm_{i}.s"] = torch.ones(c)
    p[f"norm_{i}.b"] = torch.zeros(c)
    cin = c
  p["logits.w"] = torch.randn(1, cin, 4, 4, generator=gen) * 0.02
  p["logits.b"] = torch.zeros(1)
  return p


def discriminator(p, s, y, n_layers=3):
  """Patch logits [B,1,h,w] of maps ``s`` [B,C,H,W] paired with images ``y`` [B,3,H,W]."""
  h = F.leaky_relu(F.conv2d(torch.cat([s, y], 1), p["conv_0.w"], p["conv_0.b"], 2, 1), 0.2)
  for i in range(1, n_layers + 1):
    h = F.conv2d(h, p[f"conv_{i}.w"], None, 2 if i < n_layers else 1, 1)
    h = F.leaky_relu(_inorm(h, p[f"norm_{i}.s"], p[f"norm_{i}.b"]), 0.2)
  return F.conv2d(h, p["logits.w"], p["logits.b"], 1, 1)
