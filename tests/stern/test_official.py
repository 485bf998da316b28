"""Tests of stkit.stern.official: the paper recipe is the official STERN network.

Official-layout weights load into it and give the same outputs. The reference below is written from
the published description of the official STERN code's models.py: its parts are named
``clmodel`` (torchvision VGG16, last layer Linear(4096, 1)), ``localization`` and ``fc_loc``;
theta = [[sx, 0, tx], [0, sy, ty]] from the regressor's raw outputs; affine_grid +
grid_sample with the defaults; sigmoid output.
"""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from stkit.stern.config import variant_config
from stkit.stern.experiment import recipe
from stkit.stern import STERN, STERNLoss
from stkit.stern.official import load_official_state_dict, official_key, to_official_state_dict


class OfficialLayout(nn.Module):
    def __init__(self):
        super().__init__()
        self.clmodel = torchvision.models.vgg16(weights=None)
        self.clmodel.classifier[6] = nn.Linear(4096, 1)
        blocks = []
        for cin, cout, k in ((3, 16, 7), (16, 32, 5), (32, 64, 5), (64, 128, 5)):
            blocks += [nn.Conv2d(cin, cout, k), nn.MaxPool2d(2, 2), nn.ReLU(True)]
        self.localization = nn.Sequential(*blocks)
        self.fc_loc = nn.Sequential(nn.Linear(18432, 32), nn.ReLU(True), nn.Linear(32, 4))

    def forward(self, x):  # (B, 3, 256, 256) -> probability (B, 1), sx/sy (B,)
        p = self.fc_loc(self.localization(x).reshape(len(x), -1))  # (B, 4) raw sx, sy, tx, ty
        zero = torch.zeros_like(p[:, 0])
        theta = torch.stack([torch.stack([p[:, 0], zero, p[:, 2]], 1), torch.stack([zero, p[:, 1], p[:, 3]], 1)], 1)  # (B, 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return torch.sigmoid(self.clmodel(F.grid_sample(x, grid, align_corners=False))), p[:, 0] / p[:, 1]


@pytest.fixture(scope="module")
def official():
    torch.manual_seed(3)
    net = OfficialLayout().double().eval()
    with torch.no_grad():  # a regressor that depends on the image (the released start is constant)
        net.fc_loc[2].weight.normal_(0, 0.02)
        net.fc_loc[2].bias.copy_(torch.tensor([0.9, 0.6, 0.1, -0.05]))  # sx/sy about 1.5: the hinge is active
    return net


def test_paper_recipe_has_the_official_parameters(official):
    kit = STERN(variant_config(recipe("paper").model, "faithful"))
    theirs = {official_key(k): v.shape for k, v in official.state_dict().items()}
    ours = {k: v.shape for k, v in kit.state_dict().items()}
    assert theirs == ours  # every tensor, same names after the mapping, same shapes
    assert sum(p.numel() for p in kit.parameters()) == sum(p.numel() for p in official.parameters())
    assert kit.stn.loc.features[0].weight.shape[1] == 3  # a 3-channel localisation net, as released


def test_official_weights_give_the_official_outputs(official):
    kit = STERN(variant_config(recipe("paper").model, "faithful")).double().eval()
    load_official_state_dict(kit, official.state_dict())
    g = torch.Generator().manual_seed(0)
    grey = torch.rand(2, 1, 256, 256, generator=g, dtype=torch.float64)
    prob, aspect = official(grey.expand(-1, 3, -1, -1))  # the official net on the grey image copied to RGB
    out = kit(grey)  # the kit copies the grey channel itself
    assert torch.allclose(torch.sigmoid(out.logit), prob[:, 0], rtol=1e-10, atol=1e-12)
    assert torch.allclose(out.aspect, aspect, rtol=1e-10, atol=1e-12)
    assert prob.std() > 0 and aspect.std() > 0  # the outputs differ per image: a comparison that can fail
    y = torch.tensor([1.0, 0.0], dtype=torch.float64)
    official_loss = F.binary_cross_entropy(prob[:, 0], y) + torch.clamp(aspect - 1.25, min=0).mean()  # stage 2
    kit_loss = STERNLoss(1.0, 1.25, faithful=True)(out.logit, y, out.aspect)
    assert torch.allclose(kit_loss, official_loss, rtol=1e-10)
    official_loss.backward()
    kit_loss.backward()
    ours = dict(kit.named_parameters())
    for name, p in official.named_parameters():  # every gradient, through the mapping
        assert torch.allclose(ours[official_key(name)].grad, p.grad, rtol=1e-7, atol=1e-12), name
    assert official.localization[0].weight.grad.abs().sum() > 0 and (aspect > 1.25).all()
    back = to_official_state_dict(kit)
    assert back.keys() == official.state_dict().keys()
    assert all(torch.equal(back[k], v) for k, v in official.state_dict().items())


def test_bad_official_state_dicts_are_named(official):
    kit = STERN(variant_config(recipe("paper").model, "faithful"))
    sd = {k: v.float() for k, v in official.state_dict().items()}
    with pytest.raises(KeyError, match="not a parameter of the official"):
        load_official_state_dict(kit, sd | {"extra.weight": torch.zeros(1)})
    short = dict(sd)
    short.pop("fc_loc.2.bias")
    with pytest.raises(RuntimeError, match="stn.loc.regressor.2.bias"):
        load_official_state_dict(kit, short)
    wrong = dict(sd) | {"localization.0.weight": torch.zeros(16, 1, 7, 7)}  # a 1-channel localisation net
    with pytest.raises(ValueError, match="stn.loc.features.0.weight"):
        load_official_state_dict(kit, wrong)
    with pytest.raises(ValueError, match="official network"):
        load_official_state_dict(STERN(variant_config(recipe("quick").model, "bounded")), sd)
    dp = {"module." + k: v for k, v in sd.items()}  # saved from nn.DataParallel
    load_official_state_dict(kit, dp)
