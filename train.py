"""python train.py mode=sensemode budget=0.3: the same as ``sdexp-train`` (``sdexp/run/cli.py``)."""

from sdexp.run.cli import train

if __name__ == "__main__":
    train()
