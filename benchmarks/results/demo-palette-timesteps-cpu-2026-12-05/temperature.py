"""Scratch: a palette model sampled with its logits divided by a temperature before the softmax.
TAU > 1 softens every prediction of the clean video toward the mean colour, TAU < 1 sharpens it.
usage: python temperature.py TAU ARGS...   (vdm-eval's arguments)"""
import sys

import torch
import torch.nn.functional as F

import vdm.unet

tau = float(sys.argv.pop(1))


def forward(self, logits):
    return F.conv3d(torch.softmax(logits.float() / tau, dim=1), self.weight)


vdm.unet.PaletteMix.forward = forward
sys.argv[0] = "vdm-eval"
from vdm.cli.eval import main  # noqa: E402

main()
