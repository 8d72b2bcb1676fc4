"""An untrained ``Talker`` of the real class, for developing and testing the server before (or
without) trained weights. Seeded, so two calls give the same model."""

from __future__ import annotations

import torch

from models.face.load import load_rig
from models.net.audio_encoder import AudioEncoderConfig
from models.net.denoiser import DenoiserConfig
from models.net.identity import IdentityConfig
from models.net.talker import ModelSize, Talker, TalkerConfig

TINY = ModelSize(encoder=AudioEncoderConfig(d_model=32, dilations=(1, 2), dropout=0.0),
                 denoiser=DenoiserConfig(time_dim=16, hidden=32),
                 identity=IdentityConfig(dim=16, joint_dim=16))


def random_talker(size: ModelSize | None = None, identities: tuple[str, ...] = ("alice", "bob"),
                  rig: str = "auto", steps: int = 8, seed: int = 0) -> Talker:
    face = load_rig(rig)
    config = TalkerConfig.build(size or ModelSize(), face.blendshape_names, identities,
                                sampler_steps=steps)
    torch.manual_seed(seed)
    talker = Talker(config, face.basis)
    talker.eval()
    return talker
