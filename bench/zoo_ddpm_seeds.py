"""Trial variant of the ``mini`` zoo with the DDPM as a seed architecture (not a preset).

    .venv/bin/python bench/zoo_ddpm_seeds.py [OUT]      # default runs/zoo-mini-ddpmseeds

``mini`` trains one DDPM (``ddpm_objects_s0``) as a never-known extra; here it is a sixth
architecture like the VAE: three seeds on its primary dataset (mate) in the seed group and
``ddpm_objects_s0`` in the dataset group. Copy ``runs/zoo-mini`` to OUT first and only the
three new DDPMs are trained (about 20 min on 2 cores with --jobs 2). Then run
``bench/zoo_sanity.py OUT --split splitK --per-class`` (bench/results/trial_ddpmseeds_sanity.txt).
"""
from __future__ import annotations

import sys
from dataclasses import replace

from osma.zoo import build
from osma.zoo.presets import get

SPEC = replace(get("mini"), name="mini-ddpmseeds", archs=("dcgan", "nnconv", "bilinear", "pixshuffle", "vae", "ddpm"),
               extras=(("face", ""),))

if __name__ == "__main__":  # the build's worker processes re-import this file
    build(SPEC, sys.argv[1] if len(sys.argv) > 1 else "runs/zoo-mini-ddpmseeds", jobs=2)
